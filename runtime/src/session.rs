//! Who the command line acts as, and the tasks it spawns for that identity.
//!
//! In the embedded default the OS user who runs `nexus` is `user:<login>`
//! and owns the zones it creates. `--as PRINCIPAL` acts as someone else
//! (the data directory's owner can read its files anyway, so this is a way
//! to try permissions, like `sudo -u`). `--token` acts with a signed
//! token's identity, limited to its zone and capabilities.

use nexus_kernel::Claims;
use nexus_kernel::Issuer;
use nexus_kernel::Kernel;
use nexus_kernel::KernelError;
use nexus_kernel::ZoneId;
use nexus_kernel::{Capabilities, Principal, Task};

use crate::ops::OpResult;

/// `user:<login>`, from USER or LOGNAME; `user:uid-N` if neither is usable.
pub fn operator() -> Principal {
    let login = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find_map(|name| Principal::parse(&format!("user:{name}")).ok());
    login.unwrap_or_else(|| {
        // /proc/self belongs to this process's user.
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        Principal::User(format!("uid-{uid}"))
    })
}

/// The identity a command acts with.
pub struct Acting {
    pub principal: Principal,
    pub caps: Capabilities,
    /// A token binds its holder to one zone...
    pub zone: Option<ZoneId>,
    /// ...and to the other zones it names, which mounts may lead into.
    pub reach: Vec<ZoneId>,
    /// Named by `--as` or `--token` (else the operator by default, and an
    /// agent runs as `agent:<file stem>`).
    pub chosen: bool,
}

impl Acting {
    /// From `--token`, else `--as`, else the operator.
    pub fn resolve(
        kernel: &Kernel,
        as_principal: Option<&str>,
        token: Option<&str>,
    ) -> OpResult<Self> {
        if let Some(t) = token {
            let claims = kernel.verify_token(t)?;
            return Ok(Acting::holder(claims));
        }
        let principal = match as_principal {
            Some(p) => Principal::parse(p)?,
            None => operator(),
        };
        Ok(Acting {
            principal,
            caps: Capabilities::ALL,
            zone: None,
            reach: Vec::new(),
            chosen: as_principal.is_some(),
        })
    }

    /// The holder of a verified token.
    pub fn holder(claims: Claims) -> Self {
        Acting {
            principal: claims.principal,
            caps: claims.caps,
            zone: Some(claims.zone),
            reach: claims.reach,
            chosen: true,
        }
    }

    /// This identity as the issuer of a token.
    pub fn issuer(&self) -> Issuer {
        Issuer {
            principal: self.principal.clone(),
            caps: self.caps,
            bound_to: self.zone.clone(),
            reach: self.reach.clone(),
        }
    }

    /// A task in `zone` for this identity.
    pub fn task(&self, kernel: &Kernel, zone: &str) -> OpResult<Task> {
        let zone = ZoneId::new(zone)?;
        let Some(bound) = &self.zone else {
            return Ok(kernel.spawn_task(self.principal.clone(), &zone, self.caps)?);
        };
        if *bound != zone {
            return Err(
                KernelError::Access(format!("the token is for zone {bound}, not {zone}")).into(),
            );
        }
        let reach = self.reach.clone();
        Ok(kernel.spawn_bound_task(self.principal.clone(), &zone, self.caps, reach)?)
    }
}
