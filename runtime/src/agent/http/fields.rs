//! `wasi:http` fields (headers and trailers): plain values a guest builds,
//! checked as HTTP (`invalid-syntax`) and charged to the agent's host
//! memory for as long as they live.

use std::sync::Arc;

use nexus_kernel::KernelError;
use wasmtime::component::{Resource, ResourceTable};

use super::types::{HeaderError, W};
use crate::agent::bindings::wasi::http::types;
use crate::agent::budget::{Charge, HostMemory};
use crate::agent::state::AgentState;

pub(super) const FIELDS: &str = "HTTP fields";

/// Header or trailer fields. Immutable once attached to a message.
pub struct Fields {
    pub(super) entries: Vec<(String, Vec<u8>)>,
    pub(super) immutable: bool,
    charge: Charge,
}

/// Host bytes an entry costs besides its name and value.
const ENTRY_OVERHEAD: u64 = 2 * std::mem::size_of::<Vec<u8>>() as u64;

fn entry_size((name, value): &(String, Vec<u8>)) -> u64 {
    (name.len() + value.len()) as u64 + ENTRY_OVERHEAD
}

fn size_of<'a>(entries: impl IntoIterator<Item = &'a (String, Vec<u8>)>) -> u64 {
    entries.into_iter().map(entry_size).sum()
}

/// Fields past the agent's host memory: the interface has no error for
/// it, so the agent traps with the reason.
pub(super) fn over_budget(e: KernelError) -> wasmtime::Error {
    wasmtime::format_err!("{e}")
}

/// A name and value HTTP can carry.
fn valid(name: &str, value: &[u8]) -> bool {
    http::HeaderName::from_bytes(name.as_bytes()).is_ok()
        && http::HeaderValue::from_bytes(value).is_ok()
}

fn invalid() -> HeaderError {
    types::HeaderError::InvalidSyntax.into()
}

fn immutable() -> HeaderError {
    types::HeaderError::Immutable.into()
}

impl Fields {
    /// Fields holding `entries`, charged to `memory` before they are kept.
    pub(super) fn charged(
        memory: &Arc<HostMemory>,
        entries: Vec<(String, Vec<u8>)>,
        immutable: bool,
    ) -> Result<Fields, KernelError> {
        let charge = memory.charge(size_of(&entries), FIELDS)?;
        Ok(Fields {
            entries,
            immutable,
            charge,
        })
    }

    /// Replaces the entries named `name` (any case) with `values`, charging
    /// the difference first.
    fn replace(&mut self, name: &str, values: Vec<Vec<u8>>) -> W<()> {
        let gone = size_of(self.named(name));
        let added: u64 = values
            .iter()
            .map(|v| (name.len() + v.len()) as u64 + ENTRY_OVERHEAD)
            .sum();
        let now = size_of(&self.entries) - gone + added;
        self.charge.resize(now, FIELDS).map_err(over_budget)?;
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.entries
            .extend(values.into_iter().map(|v| (name.to_owned(), v)));
        Ok(())
    }

    pub(super) fn named<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a (String, Vec<u8>)> {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The fields, if a guest may still change them.
    fn mutable(&mut self) -> Result<&mut Self, HeaderError> {
        if self.immutable {
            return Err(immutable());
        }
        Ok(self)
    }
}

impl AgentState {
    pub(super) fn fields(&mut self, r: &Resource<Fields>) -> W<&mut Fields> {
        Ok(self.table.get_mut(r)?)
    }

    /// A copy of the fields `at` finds in the table, pushed to it and
    /// charged (before the copy is made) like any fields.
    pub(super) fn push_copy(
        &mut self,
        at: impl Fn(&mut ResourceTable) -> W<&mut Fields>,
        immutable: bool,
    ) -> W<Resource<Fields>> {
        let entries = std::mem::take(&mut at(&mut self.table)?.entries);
        let copy = Fields::charged(&self.host_memory, entries.clone(), immutable)
            .map_err(over_budget)
            .and_then(|copy| Ok(self.table.push(copy)?));
        at(&mut self.table)?.entries = entries;
        copy
    }
}

impl types::HostFields for AgentState {
    async fn new(&mut self) -> W<Resource<Fields>> {
        let f = Fields::charged(&self.host_memory, Vec::new(), false).map_err(over_budget)?;
        Ok(self.table.push(f)?)
    }
    async fn from_list(
        &mut self,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<Resource<Fields>, HeaderError> {
        if !entries.iter().all(|(n, v)| valid(n, v)) {
            return Err(invalid());
        }
        let f = Fields::charged(&self.host_memory, entries, false)
            .map_err(|e| HeaderError::trap(over_budget(e)))?;
        self.table.push(f).map_err(HeaderError::trap)
    }
    async fn get(&mut self, f: Resource<Fields>, name: String) -> W<Vec<Vec<u8>>> {
        let f = self.fields(&f)?;
        Ok(f.named(&name).map(|(_, v)| v.clone()).collect())
    }
    async fn has(&mut self, f: Resource<Fields>, name: String) -> W<bool> {
        Ok(self.fields(&f)?.named(&name).next().is_some())
    }
    async fn set(
        &mut self,
        f: Resource<Fields>,
        name: String,
        values: Vec<Vec<u8>>,
    ) -> Result<(), HeaderError> {
        if !values.iter().all(|v| valid(&name, v))
            || http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return Err(invalid());
        }
        let f = self.fields(&f).map_err(HeaderError::trap)?.mutable()?;
        f.replace(&name, values).map_err(HeaderError::trap)
    }
    async fn delete(&mut self, f: Resource<Fields>, name: String) -> Result<(), HeaderError> {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid());
        }
        let f = self.fields(&f).map_err(HeaderError::trap)?.mutable()?;
        f.replace(&name, Vec::new()).map_err(HeaderError::trap)
    }
    async fn append(
        &mut self,
        f: Resource<Fields>,
        name: String,
        value: Vec<u8>,
    ) -> Result<(), HeaderError> {
        if !valid(&name, &value) {
            return Err(invalid());
        }
        let f = self.fields(&f).map_err(HeaderError::trap)?.mutable()?;
        let entry = (name, value);
        let now = size_of(&f.entries) + entry_size(&entry);
        f.charge
            .resize(now, FIELDS)
            .map_err(|e| HeaderError::trap(over_budget(e)))?;
        f.entries.push(entry);
        Ok(())
    }
    async fn entries(&mut self, f: Resource<Fields>) -> W<Vec<(String, Vec<u8>)>> {
        Ok(self.fields(&f)?.entries.clone())
    }
    async fn clone(&mut self, f: Resource<Fields>) -> W<Resource<Fields>> {
        self.push_copy(|t| Ok(t.get_mut(&f)?), false)
    }
    async fn drop(&mut self, f: Resource<Fields>) -> W<()> {
        self.table.delete(f)?;
        Ok(())
    }
}
