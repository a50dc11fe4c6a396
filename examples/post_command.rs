//! A stateless POST caller: sends one command envelope and prints the reply.
//!
//! ```sh
//! cargo run --example post_command -- http://127.0.0.1:8080/api <token> GetUsers '{"botID":73}'
//! ```
//! The fields argument is optional. The exit code is 0 when the reply has
//! `ok:1`, 1 otherwise; a 429 reply's `Retry-After` is printed.

use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: post_command <api-url> <token> <cmd> [fields-json]");
        std::process::exit(2);
    }
    let mut body: Value = match args.get(3) {
        Some(fields) => serde_json::from_str(fields)?,
        None => json!({}),
    };
    body["token"] = json!(args[1]);
    body["cmd"] = json!(args[2]);
    let res = reqwest::Client::new()
        .post(&args[0])
        .json(&body)
        .send()
        .await?;
    let status = res.status();
    if let Some(wait) = res.headers().get("retry-after") {
        eprintln!("rate limited: retry after {}s", wait.to_str()?);
    }
    let reply: Value = res.json().await?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    eprintln!("HTTP {status}");
    std::process::exit(if reply["ok"] == 1 { 0 } else { 1 });
}
