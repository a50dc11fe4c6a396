//! Telegram's `Update` objects: anything Telegram (or anyone holding the
//! secret token) posts must be applied, ignored or refused, never panic.
#![no_main]

use convgate::channel::Channel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let channel = convgate::channel::telegram::Telegram::new(&convgate::config::Config::default());
    let _ = channel.parse(data);
});
