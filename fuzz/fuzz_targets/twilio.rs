//! Twilio's form posts (incoming messages and status callbacks) and the
//! signature check over them: never a panic.
#![no_main]

use convgate::channel::sms::webhook;
use convgate::domain::E164;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let params = webhook::params(data);
    let _ = webhook::events(&params, |from| E164::parse(from).ok());
    let _ = webhook::signature_valid("token", "https://gw.example.com/channels/sms/1", &params, Some("x"));
});
