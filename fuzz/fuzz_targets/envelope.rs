//! The request envelope and every command's field parsing: any bytes a
//! client sends over POST or a socket must give a reply, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = convgate::cmd::Envelope::parse(data) {
        let _ = convgate::cmd::Command::parse(&env);
        let _ = convgate::cmd::connect_events(&env);
        let _ = convgate::cmd::connect_resume(&env);
    }
});
