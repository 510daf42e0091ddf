//! Property test: the ReBAC evaluator against a naive reference that derives
//! every fact by iterating the rules to a fixpoint. Random object trees,
//! random tuples, nested and cyclic groups; every (object, name, principal)
//! must get the same answer.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use nexus_kernel::access::rebac::{
    rules, Decision, Evaluator, Name, ObjectRef, Relation, Subject, Term, Tuple, TupleSource,
};
use nexus_kernel::Result;
use nexus_kernel::{Permission, Principal};
use proptest::prelude::*;

#[derive(Debug)]
struct World {
    objects: Vec<ObjectRef>,
    parents: HashMap<ObjectRef, ObjectRef>,
    tuples: Vec<Tuple>,
}

impl TupleSource for World {
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
                &t.object == o && t.relation == r && matches!(t.subject, Subject::Userset { .. })
            })
            .map(|t| t.subject.clone())
            .collect())
    }
    fn parent_of(&self, o: &ObjectRef) -> Result<Option<ObjectRef>> {
        Ok(self.parents.get(o).cloned())
    }
}

const NAMES: [Name; 8] = [
    Name::Rel(Relation::Owner),
    Name::Rel(Relation::Editor),
    Name::Rel(Relation::Viewer),
    Name::Rel(Relation::Member),
    Name::Perm(Permission::Read),
    Name::Perm(Permission::Write),
    Name::Perm(Permission::Enter),
    Name::Perm(Permission::Admin),
];

fn principal(i: usize) -> Principal {
    Principal::parse(&format!("user:u{i}")).unwrap()
}

/// Every fact (object, name, principal) by naive iteration to a fixpoint.
fn reference(w: &World) -> HashSet<(ObjectRef, Name, Principal)> {
    let mut facts: HashSet<(ObjectRef, Name, Principal)> = HashSet::new();
    loop {
        let before = facts.len();
        for o in &w.objects {
            for name in NAMES {
                for term in rules(o.ns, name) {
                    let mut new = Vec::new();
                    match *term {
                        Term::Direct(rel) => {
                            for t in w
                                .tuples
                                .iter()
                                .filter(|t| &t.object == o && t.relation == rel)
                            {
                                match &t.subject {
                                    Subject::Principal(p) => new.push(p.clone()),
                                    Subject::Userset { object, relation } => new.extend(
                                        facts
                                            .iter()
                                            .filter(|(fo, fname, _)| {
                                                fo == object && *fname == Name::Rel(*relation)
                                            })
                                            .map(|(_, _, p)| p.clone()),
                                    ),
                                }
                            }
                        }
                        Term::Computed(other) => new.extend(
                            facts
                                .iter()
                                .filter(|(fo, f, _)| fo == o && *f == other)
                                .map(|(_, _, p)| p.clone()),
                        ),
                        Term::Parent(other) => {
                            if let Some(parent) = w.parents.get(o) {
                                new.extend(
                                    facts
                                        .iter()
                                        .filter(|(fo, f, _)| fo == parent && *f == other)
                                        .map(|(_, _, p)| p.clone()),
                                );
                            }
                        }
                    }
                    for p in new {
                        facts.insert((o.clone(), name, p));
                    }
                }
            }
        }
        if facts.len() == before {
            return facts;
        }
    }
}

fn world() -> impl Strategy<Value = World> {
    // dir i's parent is some dir < i (dir 0's is the zone); files hang off dirs.
    let dirs = proptest::collection::vec(any::<prop::sample::Index>(), 1..6);
    let files = proptest::collection::vec(any::<prop::sample::Index>(), 0..5);
    let tuples = proptest::collection::vec(
        (
            any::<prop::sample::Index>(),
            0usize..3,
            any::<bool>(),
            0usize..4,
            0usize..4,
        ),
        0..24,
    );
    (dirs, files, tuples).prop_map(|(dirs, files, raw)| {
        let zone = ObjectRef::parse("zone:z").unwrap();
        let dir = |i: usize| ObjectRef::parse(&format!("dir:{}", i + 1)).unwrap();
        let group = |i: usize| ObjectRef::parse(&format!("group:g{i}")).unwrap();
        let mut objects = vec![zone.clone()];
        let mut parents = HashMap::new();
        for (i, pick) in dirs.iter().enumerate() {
            let parent = if i == 0 {
                zone.clone()
            } else {
                dir(pick.index(i))
            };
            parents.insert(dir(i), parent);
            objects.push(dir(i));
        }
        for (i, pick) in files.iter().enumerate() {
            let f = ObjectRef::parse(&format!("file:{}", 100 + i)).unwrap();
            parents.insert(f.clone(), dir(pick.index(dirs.len())));
            objects.push(f);
        }
        objects.extend((0..4).map(group));
        let mut tuples = Vec::new();
        for (pick, rel, to_group, g, u) in raw {
            let object = objects[pick.index(objects.len())].clone();
            let relation = if object.ns == nexus_kernel::access::rebac::Namespace::Group {
                Relation::Member
            } else {
                [Relation::Owner, Relation::Editor, Relation::Viewer][rel]
            };
            let subject = if to_group {
                Subject::Userset {
                    object: group(g),
                    relation: Relation::Member,
                }
            } else {
                Subject::Principal(principal(u))
            };
            tuples.push(Tuple {
                object,
                relation,
                subject,
            });
        }
        World {
            objects,
            parents,
            tuples,
        }
    })
}

/// The world seen through a cache of decisions, kept across checks the way
/// the kernel's permission cache keeps them.
struct Memo<'a> {
    world: &'a World,
    seen: RefCell<HashMap<(ObjectRef, Permission), Arc<Decision>>>,
}

impl TupleSource for Memo<'_> {
    fn has(&self, o: &ObjectRef, r: Relation, who: &Principal) -> Result<bool> {
        self.world.has(o, r, who)
    }
    fn usersets(&self, o: &ObjectRef, r: Relation) -> Result<Vec<Subject>> {
        self.world.usersets(o, r)
    }
    fn parent_of(&self, o: &ObjectRef) -> Result<Option<ObjectRef>> {
        self.world.parent_of(o)
    }
    fn known(&self, o: &ObjectRef, p: Permission) -> Option<Arc<Decision>> {
        self.seen.borrow().get(&(o.clone(), p)).cloned()
    }
    fn learned(&self, o: &ObjectRef, p: Permission, proof: &[String]) {
        let d = Decision {
            allowed: true,
            proof: proof.to_vec(),
        };
        self.seen.borrow_mut().insert((o.clone(), p), Arc::new(d));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn evaluator_agrees_with_the_fixpoint(w in world()) {
        let facts = reference(&w);
        for o in &w.objects {
            for name in NAMES {
                for u in 0..4 {
                    let who = principal(u);
                    let got = Evaluator::new(&w).check(o, name, &who).unwrap();
                    let want = facts.contains(&(o.clone(), name, who.clone()));
                    prop_assert_eq!(got.allowed, want, "{} {:?} {} with tuples {:?}", o, name, who,
                        w.tuples.iter().map(|t| t.to_string()).collect::<Vec<_>>());
                    prop_assert_eq!(got.proof.is_empty(), !want);
                }
            }
        }
    }

    #[test]
    fn cached_evaluation_agrees_with_the_fixpoint(w in world(), order in any::<prop::sample::Index>()) {
        let facts = reference(&w);
        // One principal's cache, filled check by check, in a rotated order.
        for u in 0..4 {
            let who = principal(u);
            let memo = Memo { world: &w, seen: RefCell::new(HashMap::new()) };
            let start = order.index(w.objects.len());
            for o in w.objects.iter().cycle().skip(start).take(w.objects.len()) {
                for perm in [Permission::Read, Permission::Write, Permission::Enter, Permission::Admin] {
                    let got = Evaluator::new(&memo).check(o, Name::Perm(perm), &who).unwrap();
                    let want = facts.contains(&(o.clone(), Name::Perm(perm), who.clone()));
                    prop_assert_eq!(got.allowed, want, "{} {:?} {}", o, perm, who);
                    memo.seen.borrow_mut().insert((o.clone(), perm), Arc::new(got));
                }
            }
        }
    }
}
