//! Typed state stores, declared once with their key and value types:
//!
//! ```text
//! store_key! {
//!     /// A tally: tenant, period, member.
//!     pub struct TallyKey { period_id, member_id }
//! }
//! pub const TALLIES: Store<TallyKey, Tally> = Store::new("tallies");
//!
//! let tally = TALLIES.get(ctx, &TallyKey::new(tenant, period, member))?.unwrap_or_default();
//! TALLIES.put(ctx, &key, &tally)?;
//! for (key, tally) in TALLIES.scan(ctx, &[tenant, period])? { … }
//! ```
//!
//! A key renders as its parts joined by `/`, tenant first (`coop-a/2026/m-1`), so every
//! store keeps a tenant's entries together and a scan by a leading part is a key range. The
//! values are written to the changelog as JSON, as [`Context::get`] and [`Context::put`]
//! do with the store's name.

use std::marker::PhantomData;

use serde::{Serialize, de::DeserializeOwned};

use crate::{Context, Payload, ProcessError};

/// The key of a store entry: parts, tenant first (see [`store_key!`](crate::store_key)).
pub trait StoreKey: Sized {
    /// `tenant/part/…`.
    fn render(&self) -> String;

    /// The key a [`render`](StoreKey::render) made (a timer's key, a scan's keys); `None`
    /// when the text has another number of parts.
    fn parse(rendered: &str) -> Option<Self>;
}

/// Declares a store key: a struct of its parts after the tenant, each a `String`, with
/// `new(tenant, parts…)`; it renders `tenant/part/…`.
#[macro_export]
macro_rules! store_key {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($part:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        $vis struct $name {
            pub tenant: String,
            $(pub $part: String,)*
        }

        impl $name {
            pub fn new(tenant: impl Into<String>, $($part: impl Into<String>),*) -> Self {
                Self {
                    tenant: tenant.into(),
                    $($part: $part.into(),)*
                }
            }
        }

        impl $crate::store::StoreKey for $name {
            fn render(&self) -> String {
                #[allow(unused_mut)]
                let mut key = self.tenant.clone();
                $(
                    key.push('/');
                    key.push_str(&self.$part);
                )*
                key
            }

            fn parse(rendered: &str) -> Option<Self> {
                let mut parts = rendered.split('/');
                let tenant = parts.next()?.to_owned();
                $(let $part = parts.next()?.to_owned();)*
                match parts.next() {
                    Some(_) => None,
                    None => Some(Self { tenant, $($part,)* }),
                }
            }
        }
    };
}

store_key! {
    /// A key of one entry per tenant.
    pub struct TenantKey {}
}

/// A state store: its name (its changelog is `<processor>-<name>-changelog`), its key type
/// and its value type.
pub struct Store<K, V> {
    name: &'static str,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Store<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            types: PhantomData,
        }
    }

    /// The name the processor lists in [`Processor::stores`](crate::Processor::stores).
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<K: StoreKey, V: Serialize + DeserializeOwned> Store<K, V> {
    /// The value at `key`, if any.
    pub fn get<O: Payload>(
        &self,
        ctx: &Context<'_, O>,
        key: &K,
    ) -> Result<Option<V>, ProcessError> {
        ctx.get(self.name, &key.render())
    }

    /// Writes `value` at `key` (and to the changelog, with the next commit).
    pub fn put<O: Payload>(
        &self,
        ctx: &mut Context<'_, O>,
        key: &K,
        value: &V,
    ) -> Result<(), ProcessError> {
        ctx.put(self.name, &key.render(), value)
    }

    /// Removes `key` (a tombstone in the changelog).
    pub fn delete<O: Payload>(
        &self,
        ctx: &mut Context<'_, O>,
        key: &K,
    ) -> Result<(), ProcessError> {
        ctx.delete(self.name, &key.render())
    }

    /// Every entry whose key begins with `parts` (tenant first), in key order, with its
    /// rendered key.
    pub fn scan<O: Payload>(
        &self,
        ctx: &Context<'_, O>,
        parts: &[&str],
    ) -> Result<Vec<(String, V)>, ProcessError> {
        let mut prefix = parts.join("/");
        prefix.push('/');
        ctx.scan(self.name, &prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    store_key! {
        /// A test key.
        struct PeriodMember { period_id, member_id }
    }

    #[test]
    fn keys_render_tenant_first() {
        assert_eq!(
            PeriodMember::new("coop-a", "2026", "m-1").render(),
            "coop-a/2026/m-1"
        );
        assert_eq!(TenantKey::new("coop-a").render(), "coop-a");
    }

    #[test]
    fn a_rendered_key_parses_back_and_another_shape_does_not() {
        let key = PeriodMember::new("coop-a", "2026", "m-1");
        assert_eq!(PeriodMember::parse(&key.render()), Some(key));
        assert_eq!(PeriodMember::parse("coop-a/2026"), None);
        assert_eq!(PeriodMember::parse("coop-a/2026/m-1/x"), None);
        assert_eq!(TenantKey::parse("coop-a"), Some(TenantKey::new("coop-a")));
    }
}
