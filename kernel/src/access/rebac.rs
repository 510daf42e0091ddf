//! Zanzibar-style relationship-based access control.
//!
//! A tuple `object#relation@subject` says the subject (a principal, or every
//! member of a userset such as `group:eng#member`) has that relation to the
//! object. Permissions are defined by rewrite rules over relations ([`rules`]):
//! a union of direct tuples, computed relations on the same object, and the
//! same permission on the parent (a file's parent directory, up to the zone).
//!
//! The evaluator walks those rules depth first. A (object, name) pair already
//! on the walk's stack is a cycle and contributes nothing; userset hops are
//! bounded by [`MAX_USERSET_DEPTH`]. Both are safe for a union-only schema:
//! any grant has a derivation that repeats no pair.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::access::identity::{Permission, Principal};
use crate::error::{KernelError, Result};
use crate::types::{FileKind, Ino, ZoneId, ROOT_INO};

/// How many userset hops (group within group) a check follows.
pub const MAX_USERSET_DEPTH: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Namespace {
    Zone,
    Dir,
    File,
    Pipe,
    Group,
    /// An egress destination (`host:api.example.com`, see `access::host`).
    Host,
}

impl Namespace {
    pub fn as_str(self) -> &'static str {
        match self {
            Namespace::Zone => "zone",
            Namespace::Dir => "dir",
            Namespace::File => "file",
            Namespace::Pipe => "pipe",
            Namespace::Group => "group",
            Namespace::Host => "host",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Namespace::Zone,
            Namespace::Dir,
            Namespace::File,
            Namespace::Pipe,
            Namespace::Group,
            Namespace::Host,
        ]
        .into_iter()
        .find(|n| n.as_str() == s)
    }

    /// The namespace of an inode of `kind`. Mount entries and symbolic
    /// links are leaves of their directory and are gated like files.
    pub fn of_kind(kind: FileKind) -> Self {
        match kind {
            FileKind::Dir => Namespace::Dir,
            FileKind::Regular | FileKind::Mount | FileKind::Symlink => Namespace::File,
            FileKind::Pipe => Namespace::Pipe,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Relation {
    Owner,
    Editor,
    Viewer,
    Member,
    /// May send requests to a `host:` destination.
    Fetch,
}

impl Relation {
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Owner => "owner",
            Relation::Editor => "editor",
            Relation::Viewer => "viewer",
            Relation::Member => "member",
            Relation::Fetch => "fetch",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        [
            Relation::Owner,
            Relation::Editor,
            Relation::Viewer,
            Relation::Member,
            Relation::Fetch,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| {
            KernelError::Invalid(format!(
                "relation {s:?}: use owner, editor, viewer, member or fetch"
            ))
        })
    }
}

/// An object: `zone:z1`, `dir:123`, `file:456`, `pipe:7`, `group:eng`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    pub ns: Namespace,
    pub id: String,
}

impl ObjectRef {
    pub fn zone(z: &ZoneId) -> Self {
        ObjectRef {
            ns: Namespace::Zone,
            id: z.to_string(),
        }
    }

    pub fn inode(kind: FileKind, ino: Ino) -> Self {
        ObjectRef {
            ns: Namespace::of_kind(kind),
            id: ino.to_string(),
        }
    }

    pub fn group(name: &str) -> Result<Self> {
        Self::parse(&format!("group:{name}"))
    }

    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            KernelError::Invalid(format!(
                "object {s:?}: use NAMESPACE:ID, e.g. group:eng or zone:z1"
            ))
        };
        let (ns, id) = s.split_once(':').ok_or_else(bad)?;
        let ns = Namespace::parse(ns).ok_or_else(bad)?;
        if ns == Namespace::Host {
            let id = crate::access::host::object_id(id)?;
            return Ok(ObjectRef { ns, id });
        }
        let ok_id = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        let numeric = matches!(ns, Namespace::Dir | Namespace::File | Namespace::Pipe);
        if !ok_id || (numeric && id.parse::<Ino>().is_err()) {
            return Err(bad());
        }
        Ok(ObjectRef {
            ns,
            id: id.to_owned(),
        })
    }

    /// The inode number of a dir/file/pipe object.
    pub fn ino(&self) -> Option<Ino> {
        match self.ns {
            Namespace::Dir | Namespace::File | Namespace::Pipe => self.id.parse().ok(),
            _ => None,
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.ns.as_str(), self.id)
    }
}

/// Who a tuple grants to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Subject {
    Principal(Principal),
    /// Everyone with `relation` on `object`, e.g. `group:eng#member`.
    Userset {
        object: ObjectRef,
        relation: Relation,
    },
}

impl Subject {
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once('#') {
            Some((obj, rel)) => Ok(Subject::Userset {
                object: ObjectRef::parse(obj)?,
                relation: Relation::parse(rel)?,
            }),
            None => Ok(Subject::Principal(Principal::parse(s)?)),
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Principal(p) => write!(f, "{p}"),
            Subject::Userset { object, relation } => write!(f, "{object}#{}", relation.as_str()),
        }
    }
}

/// `object#relation@subject`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tuple {
    pub object: ObjectRef,
    pub relation: Relation,
    pub subject: Subject,
}

impl Tuple {
    /// Refuses relations the schema does not define for the namespace.
    pub fn validate(&self) -> Result<()> {
        let ok = match self.object.ns {
            Namespace::Group => self.relation == Relation::Member,
            Namespace::Host => self.relation == Relation::Fetch,
            _ => !matches!(self.relation, Relation::Member | Relation::Fetch),
        };
        if !ok {
            return Err(KernelError::Invalid(format!(
                "{} objects have no relation {:?}",
                self.object.ns.as_str(),
                self.relation.as_str()
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}#{}@{}",
            self.object,
            self.relation.as_str(),
            self.subject
        )
    }
}

/// A relation or a permission: what a rule defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Name {
    Rel(Relation),
    Perm(Permission),
}

/// One arm of a rule's union.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// Tuples `object#relation@…` (following usersets).
    Direct(Relation),
    /// Another name on the same object.
    Computed(Name),
    /// A name on the object's parent (dir or zone).
    Parent(Name),
}

use Name::{Perm, Rel};
use Term::{Computed, Direct, Parent};

/// The schema: what each name means on each namespace.
pub fn rules(ns: Namespace, name: Name) -> &'static [Term] {
    const OWNER: &[Term] = &[Direct(Relation::Owner)];
    const EDITOR: &[Term] = &[Direct(Relation::Editor), Computed(Rel(Relation::Owner))];
    const VIEWER: &[Term] = &[Direct(Relation::Viewer), Computed(Rel(Relation::Editor))];
    match (ns, name) {
        (Namespace::Group, Rel(Relation::Member)) => &[Direct(Relation::Member)],
        (Namespace::Group, _) | (_, Rel(Relation::Member)) => &[],
        // Egress is granted only by `fetch` tuples, on the destination or a
        // wildcard above it: owning a zone reaches no host.
        (Namespace::Host, Rel(Relation::Fetch)) => &[Direct(Relation::Fetch)],
        (Namespace::Host, Perm(Permission::Fetch)) => &[
            Computed(Rel(Relation::Fetch)),
            Parent(Perm(Permission::Fetch)),
        ],
        (Namespace::Host, _) | (_, Rel(Relation::Fetch)) | (_, Perm(Permission::Fetch)) => &[],
        (_, Rel(Relation::Owner)) => OWNER,
        (_, Rel(Relation::Editor)) => EDITOR,
        (_, Rel(Relation::Viewer)) => VIEWER,
        (Namespace::Zone, Perm(Permission::Read)) => &[Computed(Rel(Relation::Viewer))],
        (Namespace::Zone, Perm(Permission::Write)) => &[Computed(Rel(Relation::Editor))],
        (Namespace::Zone, Perm(Permission::Enter)) => &[Computed(Rel(Relation::Viewer))],
        (Namespace::Zone, Perm(Permission::Admin)) => &[Computed(Rel(Relation::Owner))],
        (_, Perm(Permission::Read)) => &[
            Computed(Rel(Relation::Viewer)),
            Parent(Perm(Permission::Read)),
        ],
        (_, Perm(Permission::Write)) => &[
            Computed(Rel(Relation::Editor)),
            Parent(Perm(Permission::Write)),
        ],
        (_, Perm(Permission::Admin)) => &[
            Computed(Rel(Relation::Owner)),
            Parent(Perm(Permission::Admin)),
        ],
        (_, Perm(Permission::Enter)) => &[],
    }
}

/// Where the evaluator reads tuples and the object tree.
pub trait TupleSource {
    /// Whether the tuple `object#relation@who` exists.
    fn has(&self, object: &ObjectRef, relation: Relation, who: &Principal) -> Result<bool>;
    /// The userset subjects of `object#relation`.
    fn usersets(&self, object: &ObjectRef, relation: Relation) -> Result<Vec<Subject>>;
    /// The object `object` inherits from, if any.
    fn parent_of(&self, object: &ObjectRef) -> Result<Option<ObjectRef>>;

    /// A complete decision already known for `perm` on `object` (a cache).
    fn known(&self, _object: &ObjectRef, _perm: Permission) -> Option<std::sync::Arc<Decision>> {
        None
    }

    /// Told of each inherited permission the evaluator proves on the way.
    /// Only grants are reported: a denial inside a walk may be partial
    /// (a cycle cut it short), a grant never is.
    fn learned(&self, _object: &ObjectRef, _perm: Permission, _proof: &[String]) {}
}

/// The answer to a check, with the chain of facts that granted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// From the granting tuple to the checked object; empty when denied.
    pub proof: Vec<String>,
}

/// One check's evaluation state.
pub struct Evaluator<'a, S: TupleSource> {
    src: &'a S,
    stack: HashSet<(ObjectRef, Name)>,
}

impl<'a, S: TupleSource> Evaluator<'a, S> {
    pub fn new(src: &'a S) -> Self {
        Evaluator {
            src,
            stack: HashSet::new(),
        }
    }

    /// Does `who` have `name` on `object`?
    pub fn check(&mut self, object: &ObjectRef, name: Name, who: &Principal) -> Result<Decision> {
        let proof = self.eval(object, name, who, 0)?;
        Ok(Decision {
            allowed: proof.is_some(),
            proof: proof.unwrap_or_default(),
        })
    }

    fn eval(
        &mut self,
        object: &ObjectRef,
        name: Name,
        who: &Principal,
        depth: usize,
    ) -> Result<Option<Vec<String>>> {
        let key = (object.clone(), name);
        if !self.stack.insert(key.clone()) {
            return Ok(None); // a cycle: this path proves nothing new
        }
        let found = self.eval_terms(object, name, who, depth);
        self.stack.remove(&key);
        found
    }

    fn eval_terms(
        &mut self,
        object: &ObjectRef,
        name: Name,
        who: &Principal,
        depth: usize,
    ) -> Result<Option<Vec<String>>> {
        for term in rules(object.ns, name) {
            let found = match *term {
                Direct(rel) => self.direct(object, rel, who, depth)?,
                Computed(other) => self.eval(object, other, who, depth)?.map(|mut p| {
                    p.push(format!(
                        "{} implies {} on {object}",
                        show(other),
                        show(name)
                    ));
                    p
                }),
                Parent(other) => match self.src.parent_of(object)? {
                    Some(parent) => self.inherit(object, &parent, other, who, depth)?,
                    None => None,
                },
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    fn inherit(
        &mut self,
        object: &ObjectRef,
        parent: &ObjectRef,
        name: Name,
        who: &Principal,
        depth: usize,
    ) -> Result<Option<Vec<String>>> {
        let proof = match (
            name,
            name_perm(name).and_then(|p| self.src.known(parent, p)),
        ) {
            (_, Some(d)) => d.allowed.then(|| d.proof.clone()),
            _ => {
                let found = self.eval(parent, name, who, depth)?;
                if let (Some(p), Some(perm)) = (&found, name_perm(name)) {
                    self.src.learned(parent, perm, p);
                }
                found
            }
        };
        Ok(proof.map(|mut p| {
            p.push(format!("{object} inherits {} from {parent}", show(name)));
            p
        }))
    }

    fn direct(
        &mut self,
        object: &ObjectRef,
        rel: Relation,
        who: &Principal,
        depth: usize,
    ) -> Result<Option<Vec<String>>> {
        if self.src.has(object, rel, who)? {
            return Ok(Some(vec![format!("{object}#{}@{who}", rel.as_str())]));
        }
        if depth >= MAX_USERSET_DEPTH {
            return Ok(None);
        }
        for subject in self.src.usersets(object, rel)? {
            if let Subject::Userset {
                object: set,
                relation,
            } = &subject
            {
                if let Some(mut p) = self.eval(set, Rel(*relation), who, depth + 1)? {
                    p.push(format!("{object}#{}@{subject}", rel.as_str()));
                    return Ok(Some(p));
                }
            }
        }
        Ok(None)
    }
}

fn name_perm(name: Name) -> Option<Permission> {
    match name {
        Perm(p) => Some(p),
        Rel(_) => None,
    }
}

fn show(name: Name) -> &'static str {
    match name {
        Rel(r) => r.as_str(),
        Perm(p) => p.as_str(),
    }
}

/// The parent object of an inode object, given the inode's parent number.
pub fn parent_object(zone: &ZoneId, ino: Ino, parent_ino: Ino) -> ObjectRef {
    if ino == ROOT_INO {
        ObjectRef::zone(zone)
    } else {
        ObjectRef::inode(FileKind::Dir, parent_ino)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Mem {
        tuples: Vec<Tuple>,
        parents: HashMap<ObjectRef, ObjectRef>,
    }

    impl TupleSource for Mem {
        fn has(&self, o: &ObjectRef, r: Relation, who: &Principal) -> Result<bool> {
            Ok(self.tuples.iter().any(|t| {
                &t.object == o && t.relation == r && t.subject == Subject::Principal(who.clone())
            }))
        }
        fn usersets(&self, o: &ObjectRef, r: Relation) -> Result<Vec<Subject>> {
            Ok(self
                .tuples
                .iter()
                .filter(|t| {
                    &t.object == o
                        && t.relation == r
                        && matches!(t.subject, Subject::Userset { .. })
                })
                .map(|t| t.subject.clone())
                .collect())
        }
        fn parent_of(&self, o: &ObjectRef) -> Result<Option<ObjectRef>> {
            Ok(self.parents.get(o).cloned())
        }
    }

    fn t(s: &str) -> Tuple {
        let (obj, rest) = s.split_once('#').unwrap();
        let (rel, subj) = rest.split_once('@').unwrap();
        Tuple {
            object: ObjectRef::parse(obj).unwrap(),
            relation: Relation::parse(rel).unwrap(),
            subject: Subject::parse(subj).unwrap(),
        }
    }

    fn o(s: &str) -> ObjectRef {
        ObjectRef::parse(s).unwrap()
    }

    fn p(s: &str) -> Principal {
        Principal::parse(s).unwrap()
    }

    #[test]
    fn inheritance_groups_and_proofs() {
        let mem = Mem {
            tuples: vec![
                t("dir:2#editor@group:eng#member"),
                t("group:eng#member@group:core#member"),
                t("group:core#member@user:alice"),
                t("group:core#member@group:eng#member"), // a cycle
            ],
            parents: [
                (o("file:3"), o("dir:2")),
                (o("dir:2"), o("dir:1")),
                (o("dir:1"), o("zone:z")),
            ]
            .into_iter()
            .collect(),
        };
        let mut ev = Evaluator::new(&mem);
        let d = ev
            .check(&o("file:3"), Perm(Permission::Write), &p("user:alice"))
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.proof.first().unwrap(), "group:core#member@user:alice");
        assert!(d
            .proof
            .last()
            .unwrap()
            .contains("file:3 inherits write from dir:2"));
        assert!(
            !ev.check(&o("file:3"), Perm(Permission::Admin), &p("user:alice"))
                .unwrap()
                .allowed
        );
        assert!(
            !ev.check(&o("dir:1"), Perm(Permission::Read), &p("user:alice"))
                .unwrap()
                .allowed
        );
        assert!(
            !ev.check(&o("file:3"), Perm(Permission::Read), &p("user:bob"))
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn schema_refuses_undefined_relations() {
        assert!(t("group:eng#owner@user:a").validate().is_err());
        assert!(t("dir:1#member@user:a").validate().is_err());
        assert!(t("zone:z#owner@user:a").validate().is_ok());
        assert!(ObjectRef::parse("dir:abc").is_err());
        assert!(Subject::parse("group:eng#boss").is_err());
    }
}
