//! Channel adapters: the only code that talks to messaging providers.
//!
//! - [`whatsapp`]: the WhatsApp Cloud API (Meta Graph API): sends, the
//!   template list, and the types and signature of its webhooks.
//!
//! Adapters only translate: what a send or a webhook means for users,
//! messages and acks lives in [`crate::messages`].

pub mod whatsapp;
