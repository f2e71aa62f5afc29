//! Who reads the books: `habitat finance grant --tenant T --role R` makes R a login-less
//! role that reads the report views for its tenants only, and no base table (migration
//! 0004 filters every report view by the asking role). A login user reads as R once an
//! administrator runs `GRANT R TO <user>`.

use sqlx::PgPool;

use crate::{report::REPORTS, tables::ident};

/// Why a grant was refused.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(
        "{0:?} is not a role name for a grant: 1-63 characters of a-z 0-9 _, not starting \
         with a digit, not pg_* or habitat_finance"
    )]
    BadRole(String),
    #[error("{0:?} is not a tenant id (1-64 characters of A-Z a-z 0-9 . _ : -)")]
    BadTenant(String),
    #[error("grant at least one tenant")]
    NoTenant,
    #[error(
        "role {0} can log in: bind tenants to a login-less role and grant that role to the user"
    )]
    LoginRole(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn is_role_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.starts_with("pg_")
        && name != "habitat_finance"
}

fn is_tenant_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Creates `role` (login-less) or updates it: it reads the report views of `schema`, rows
/// of `tenants` only (the tenants it had before are replaced).
pub async fn grant(
    pool: &PgPool,
    schema: &str,
    role: &str,
    tenants: &[String],
) -> Result<(), GrantError> {
    if !is_role_name(role) {
        return Err(GrantError::BadRole(role.to_owned()));
    }
    if tenants.is_empty() {
        return Err(GrantError::NoTenant);
    }
    if let Some(bad) = tenants.iter().find(|t| !is_tenant_id(t)) {
        return Err(GrantError::BadTenant(bad.clone()));
    }
    let mut tx = pool.begin().await?;
    let can_login: Option<bool> =
        sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(&mut *tx)
            .await?;
    match can_login {
        Some(true) => return Err(GrantError::LoginRole(role.to_owned())),
        Some(false) => {}
        None => {
            _ = sqlx::query(&format!("CREATE ROLE {} NOLOGIN", ident(role)))
                .execute(&mut *tx)
                .await?;
        }
    }
    _ = sqlx::query(&format!(
        "GRANT USAGE ON SCHEMA {} TO {}",
        ident(schema),
        ident(role)
    ))
    .execute(&mut *tx)
    .await?;
    for report in REPORTS {
        _ = sqlx::query(&format!(
            "GRANT SELECT ON {}.{} TO {}",
            ident(schema),
            ident(report.view),
            ident(role)
        ))
        .execute(&mut *tx)
        .await?;
    }
    _ = sqlx::query(&format!(
        "DELETE FROM {}.finance_tenant_roles WHERE role_name = $1",
        ident(schema)
    ))
    .bind(role)
    .execute(&mut *tx)
    .await?;
    _ = sqlx::query(&format!(
        "INSERT INTO {}.finance_tenant_roles (role_name, tenant_id) SELECT $1, unnest($2::text[])",
        ident(schema)
    ))
    .bind(role)
    .bind(tenants)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_plain_identifiers() {
        for good in ["finance_coop_a", "f1", "_x"] {
            assert!(is_role_name(good), "{good}");
        }
        for bad in [
            "",
            "Finance",
            "1f",
            "pg_read_all_data",
            "habitat_finance",
            "a;b",
            "a b",
        ] {
            assert!(!is_role_name(bad), "{bad}");
        }
        assert!(is_tenant_id("coop-a") && !is_tenant_id("coop a"));
    }
}
