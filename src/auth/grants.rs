//! How far an admin reaches. An admin restricted to some tables may give a
//! user or token only tables within its own, and may change (role, tables,
//! disable, enable, password, sessions, revoke) only users and tokens whose
//! tables are within its own. No tables means every table, so only an admin
//! with every table grants every table or manages a user or token that has
//! them, every full admin among them. The role is not limited beyond that:
//! an admin may make a user an admin of tables within its own.
//!
//! The CLI is run by the DBA with the store's credentials, who could change
//! the tables directly: it reaches everything.

use super::{Actor, AuthError, Tables};

impl Tables {
    /// Whether every table these allow, `outer` allows too: everything is
    /// within all tables only, and a list is within a list when each of its
    /// patterns is covered by one of `outer`'s (which, for these patterns, is
    /// the same as being covered by all of them together).
    pub fn within(&self, outer: &Tables) -> bool {
        outer.is_all() || (!self.is_all() && self.outside(outer).next().is_none())
    }

    /// The patterns of a restricted list that `outer` does not cover.
    fn outside<'a>(&'a self, outer: &'a Tables) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(|p| !outer.0.iter().any(|o| o.covers(p)))
            .map(|p| p.as_str())
    }
}

/// Who changes users and tokens, and how far it reaches.
#[derive(Debug, Clone)]
pub struct Manager {
    /// Who the change's event names.
    pub actor: Actor,
    /// The admin's own tables: every table for a full admin and the CLI.
    pub reach: Tables,
}

impl Manager {
    /// The DBA at a shell: every table.
    pub fn cli() -> Manager {
        Manager {
            actor: Actor::cli(),
            reach: Tables::default(),
        }
    }

    /// Refuses to give `what` (`the user eve`) `tables` beyond this admin's own.
    pub fn may_grant(&self, what: &str, tables: &Tables) -> Result<(), AuthError> {
        if tables.within(&self.reach) {
            return Ok(());
        }
        let given = if tables.is_all() {
            "every table".to_owned()
        } else {
            tables.outside(&self.reach).collect::<Vec<_>>().join(", ")
        };
        Err(AuthError::Forbidden(format!(
            "You are an admin of the tables {} only, so you cannot give {what} {given}: an admin may \
             grant only tables within its own. Name tables within yours, or ask an admin with every table.",
            self.reach.describe()
        )))
    }

    /// Refuses to change `what`, which has `tables`, unless they are within this admin's own.
    pub fn may_manage(&self, what: &str, tables: &Tables) -> Result<(), AuthError> {
        if tables.within(&self.reach) {
            return Ok(());
        }
        Err(AuthError::Forbidden(format!(
            "You are an admin of the tables {} only, and {what} has the tables {}: an admin may change \
             only users and tokens whose tables are within its own. Ask an admin with every table.",
            self.reach.describe(),
            tables.describe()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(list: &str) -> Tables {
        Tables::parse_list(list).unwrap()
    }

    fn admin_of(list: &str) -> Manager {
        Manager {
            actor: Actor::cli(),
            reach: tables(list),
        }
    }

    #[test]
    fn every_table_is_within_every_table_only() {
        let all = Tables::default();
        assert!(all.within(&all));
        assert!(tables("sales.*").within(&all));
        assert!(!all.within(&tables("*.*")));
        assert!(tables("sales.orders, sales.leads").within(&tables("public.*, sales.*")));
        assert!(!tables("sales.orders, hr.pay").within(&tables("sales.*")));
    }

    #[test]
    fn a_restricted_admin_grants_and_manages_within_its_tables_only() {
        let sales = admin_of("sales.*");
        assert!(sales
            .may_grant("the user eve", &tables("sales.orders"))
            .is_ok());
        assert!(sales.may_manage("the user eve", &tables("sales.*")).is_ok());
        let e = sales
            .may_grant("the user eve", &tables("sales.orders, hr.pay, hr.*"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sales.* only") && e.contains("give the user eve hr.pay, hr.*:"),
            "{e}"
        );
        let e = sales
            .may_grant("the API token t", &Tables::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("give the API token t every table"), "{e}");
        let e = sales
            .may_manage("the user root", &Tables::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("the user root has the tables all"), "{e}");
        assert!(matches!(
            sales.may_manage("x", &tables("*.*")),
            Err(AuthError::Forbidden(_))
        ));
    }

    #[test]
    fn a_full_admin_and_the_cli_reach_everything() {
        for m in [admin_of(""), Manager::cli()] {
            assert!(m.may_grant("x", &Tables::default()).is_ok());
            assert!(m.may_manage("x", &tables("hr.pay")).is_ok());
        }
    }
}
