//! The FUSE node table: which kernel path each node id the Linux kernel
//! holds stands for. Nodes are kept as (parent, name), as libfuse's
//! high-level layer keeps them, so a rename moves a whole subtree in one
//! step; an unlinked node is detached (reachable only through the files
//! already open on it). The table is bounded: the Linux kernel forgets
//! nodes it no longer caches, and a lookup past the bound fails instead of
//! growing the host.
//!
//! Each node also remembers which kernel inode it last showed (its zone and
//! inode number), so that a change the kernel reports (`changes.rs`) can be
//! turned into the node ids whose cached entries, attributes and pages
//! Linux must drop.

use std::collections::HashMap;

use nexus_kernel::ZoneId;

/// The root's node id (FUSE's `FUSE_ROOT_ID`).
pub const ROOT: u64 = 1;

/// Nodes remembered at most; a lookup past it gets `ENFILE`.
pub const MAX_NODES: usize = 1 << 20;

/// A kernel inode: its zone (a mount leads into another) and number.
pub type Inode = (ZoneId, u64);

struct Node {
    /// `None`: unlinked, or replaced by a rename.
    parent: Option<u64>,
    name: String,
    /// Lookups the Linux kernel holds (it forgets them in `forget`).
    lookups: u64,
    /// The kernel inode last shown under this node.
    inode: Option<Inode>,
}

/// Node ids ↔ places in the zone.
pub struct Nodes {
    next: u64,
    nodes: HashMap<u64, Node>,
    children: HashMap<(u64, String), u64>,
    /// The nodes showing each kernel inode (a hard link's names, a
    /// directory under a moved name).
    shown: HashMap<Inode, Vec<u64>>,
}

/// The table is full.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Default for Nodes {
    fn default() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                parent: None,
                name: String::new(),
                lookups: 1,
                inode: None,
            },
        );
        Nodes {
            next: ROOT + 1,
            nodes,
            children: HashMap::new(),
            shown: HashMap::new(),
        }
    }
}

impl Nodes {
    /// The path of `id` from the zone root; `None` if it is unknown or
    /// detached.
    pub fn path(&self, id: u64) -> Option<String> {
        let mut names = Vec::new();
        let mut at = id;
        while at != ROOT {
            let node = self.nodes.get(&at)?;
            names.push(node.name.as_str());
            at = node.parent?;
        }
        let mut path = String::from("/");
        for (i, name) in names.iter().rev().enumerate() {
            if i > 0 {
                path.push('/');
            }
            path.push_str(name);
        }
        Some(path)
    }

    /// The path of `name` in directory `parent`.
    pub fn child_path(&self, parent: u64, name: &str) -> Option<String> {
        let dir = self.path(parent)?;
        Some(if dir == "/" {
            format!("/{name}")
        } else {
            format!("{dir}/{name}")
        })
    }

    /// One more lookup of `name` in `parent`, showing kernel inode
    /// `inode` if known: its node id, new or known.
    pub fn remember(&mut self, parent: u64, name: &str, inode: Option<Inode>) -> Result<u64, Full> {
        let known = self.children.get(&(parent, name.to_owned())).copied();
        let id = match known.filter(|id| self.nodes.contains_key(id)) {
            Some(id) => id,
            None => {
                if self.nodes.len() >= MAX_NODES {
                    return Err(Full);
                }
                let id = self.next;
                self.next += 1;
                let node = Node {
                    parent: Some(parent),
                    name: name.to_owned(),
                    lookups: 0,
                    inode: None,
                };
                self.nodes.insert(id, node);
                self.children.insert((parent, name.to_owned()), id);
                id
            }
        };
        if let Some(node) = self.nodes.get_mut(&id) {
            node.lookups += 1;
        }
        if inode.is_some() {
            self.show(id, inode);
        }
        Ok(id)
    }

    /// Records that `id` shows kernel inode `inode`.
    pub fn show(&mut self, id: u64, inode: Option<Inode>) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.inode == inode {
            return;
        }
        let old = std::mem::replace(&mut node.inode, inode.clone());
        self.unshow(id, old);
        if let Some(inode) = inode {
            self.shown.entry(inode).or_default().push(id);
        }
    }

    fn unshow(&mut self, id: u64, inode: Option<Inode>) {
        if let Some(inode) = inode {
            if let Some(ids) = self.shown.get_mut(&inode) {
                ids.retain(|&i| i != id);
                if ids.is_empty() {
                    self.shown.remove(&inode);
                }
            }
        }
    }

    /// The nodes showing kernel inode `inode`.
    pub fn showing(&self, inode: &Inode) -> &[u64] {
        self.shown.get(inode).map_or(&[], Vec::as_slice)
    }

    /// Every node with its place: (id, parent and name if attached).
    pub fn all(&self) -> impl Iterator<Item = (u64, Option<(u64, &str)>)> {
        self.nodes
            .iter()
            .map(|(&id, n)| (id, n.parent.map(|p| (p, n.name.as_str()))))
    }

    /// The Linux kernel dropped `n` lookups of `id`.
    pub fn forget(&mut self, id: u64, n: u64) {
        if id == ROOT {
            return;
        }
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups == 0 {
            if let Some(node) = self.nodes.remove(&id) {
                self.unbind(id, &node);
                self.unshow(id, node.inode);
            }
        }
    }

    /// `name` in `parent` is gone (unlinked, removed).
    pub fn detach(&mut self, parent: u64, name: &str) {
        if let Some(id) = self.children.remove(&(parent, name.to_owned())) {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.parent = None;
            }
        }
    }

    /// `name` in `parent` is now `new_name` in `new_parent`, replacing
    /// whatever was there.
    pub fn rename(&mut self, parent: u64, name: &str, new_parent: u64, new_name: &str) {
        self.detach(new_parent, new_name);
        if let Some(id) = self.children.remove(&(parent, name.to_owned())) {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.parent = Some(new_parent);
                node.name = new_name.to_owned();
                self.children.insert((new_parent, new_name.to_owned()), id);
            }
        }
    }

    fn unbind(&mut self, id: u64, node: &Node) {
        if let Some(parent) = node.parent {
            let key = (parent, node.name.clone());
            if self.children.get(&key) == Some(&id) {
                self.children.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_renames_of_their_ancestors() {
        let mut n = Nodes::default();
        let a = n.remember(ROOT, "a", None).unwrap();
        let b = n.remember(a, "b", None).unwrap();
        let f = n.remember(b, "f", None).unwrap();
        assert_eq!(n.path(f).as_deref(), Some("/a/b/f"));
        n.rename(ROOT, "a", ROOT, "z");
        assert_eq!(n.path(f).as_deref(), Some("/z/b/f"));
        assert_eq!(n.child_path(b, "g").as_deref(), Some("/z/b/g"));
        // Looked up again under its new name: the same node.
        assert_eq!(n.remember(ROOT, "z", None), Ok(a));
    }

    #[test]
    fn a_detached_node_has_no_path_and_its_name_is_free() {
        let mut n = Nodes::default();
        let f = n.remember(ROOT, "f", None).unwrap();
        n.detach(ROOT, "f");
        assert_eq!(n.path(f), None);
        let g = n.remember(ROOT, "f", None).unwrap();
        assert_ne!(f, g);
        // Renaming over a name detaches what was there.
        let h = n.remember(ROOT, "h", None).unwrap();
        n.rename(ROOT, "h", ROOT, "f");
        assert_eq!(n.path(g), None);
        assert_eq!(n.path(h).as_deref(), Some("/f"));
    }

    #[test]
    fn a_kernel_inode_maps_to_the_nodes_showing_it() {
        let mut n = Nodes::default();
        let z = ZoneId::new("z1").unwrap();
        let a = n.remember(ROOT, "a", Some((z.clone(), 5))).unwrap();
        let b = n.remember(ROOT, "b", Some((z.clone(), 5))).unwrap();
        assert_eq!(n.showing(&(z.clone(), 5)), &[a, b]);
        // Looked up again, now showing another inode (replaced elsewhere).
        n.remember(ROOT, "b", Some((z.clone(), 6))).unwrap();
        assert_eq!(n.showing(&(z.clone(), 5)), &[a]);
        assert_eq!(n.showing(&(z.clone(), 6)), &[b]);
        // Forgotten: shown by nothing.
        n.forget(a, 1);
        assert!(n.showing(&(z.clone(), 5)).is_empty());
        // Another zone's inode of the same number is another inode.
        assert!(n.showing(&(ZoneId::new("z2").unwrap(), 6)).is_empty());
    }

    #[test]
    fn forgotten_nodes_leave_the_table() {
        let mut n = Nodes::default();
        let f = n.remember(ROOT, "f", None).unwrap();
        assert_eq!(n.remember(ROOT, "f", None), Ok(f));
        n.forget(f, 1);
        assert_eq!(n.path(f).as_deref(), Some("/f"));
        n.forget(f, 1);
        assert_eq!(n.path(f), None);
        assert_eq!(n.len(), 1);
        // The root is never forgotten.
        n.forget(ROOT, 10);
        assert_eq!(n.path(ROOT).as_deref(), Some("/"));
    }
}
