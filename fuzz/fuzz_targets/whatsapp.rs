//! Meta's webhook JSON (the WhatsApp Cloud API's `messages` field): any
//! body that passed the signature check must parse or be refused, never panic.
#![no_main]

use convgate::channel::Channel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let channel = convgate::channel::whatsapp::WhatsApp::new(&convgate::config::Config::default());
    let _ = channel.parse(data);
});
