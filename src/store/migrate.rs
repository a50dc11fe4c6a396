//! Upgrades of data written by earlier layouts, applied once when the store
//! opens, each in one atomic batch flushed before anything is served.
//!
//! - Layout 1 → 2 (the `Channel` interface): WhatsApp bots kept their
//!   settings under `whatsapp` and only they were indexed by botID
//!   (`wab/`); provider ids were `wam/`, per-user WhatsApp state `wau/`.
//!   Now every bot keeps `settings`/`secrets` and is indexed in `bix/`,
//!   provider ids are `pid/`, channel state is `chs/`. Messages keep their
//!   JSON (`wamid` and `whatsapp_error_*` are read as aliases).

use super::codec::{bix_key, key};
use super::engine::Batch;
use super::kv::Kv;
use super::StoreError;
use serde_json::{Map, Value};

/// The layout this code writes.
pub const LAYOUT: u64 = 2;

const LAYOUT_KEY: &[u8] = b"meta/layout";

/// Brings `db` to [`LAYOUT`]. Errors: a layout newer than this code
/// (written by a later convgate), or a record that does not decode.
pub(super) fn upgrade(db: &Kv) -> Result<(), StoreError> {
    let layout = db.get(LAYOUT_KEY)?.map_or(1, |v| super::codec::be_u64(&v));
    if layout > LAYOUT {
        return Err(StoreError::Codec(format!(
            "the data dir has layout {layout}, newer than this convgate's {LAYOUT}"
        )));
    }
    if layout == LAYOUT {
        return Ok(());
    }
    let mut batch = Batch::default();
    let mut counts = [0usize; 4];
    let mut seen_ids = std::collections::HashMap::new();
    for kv in db.scan_prefix(b"bot/") {
        let (k, v) = kv?;
        let text = String::from_utf8_lossy(&k[4..]).into_owned();
        let Some((org, id)) = text.rsplit_once('/') else {
            continue;
        };
        let mut bot: Map<String, Value> = serde_json::from_slice(&v)?;
        if let Some(Value::Object(w)) = bot.remove("whatsapp") {
            let (mut plain, mut sealed) = (Map::new(), Map::new());
            for (name, value) in w {
                match (name.as_str(), value) {
                    (_, Value::Null) => {}
                    ("access_token" | "app_secret" | "verify_token", v) => {
                        sealed.insert(name, v);
                    }
                    (_, v) => {
                        plain.insert(name, v);
                    }
                }
            }
            bot.insert("settings".into(), Value::Object(plain));
            bot.insert("secrets".into(), Value::Object(sealed));
        }
        batch.insert(k.as_ref(), serde_json::to_vec(&bot)?);
        if let Ok(id) = id.parse::<u64>() {
            // Only WhatsApp botIDs were unique across organizations: another
            // kind's id taken twice keeps its first owner in the index.
            if let Some(owner) = seen_ids.insert(id, org.to_string()) {
                tracing::warn!(bot = id, %owner, other = %org, "botID used by two organizations; inbound URLs reach the first");
                seen_ids.insert(id, owner);
            } else {
                batch.insert(bix_key(id), org.as_bytes());
            }
        }
        counts[0] += 1;
    }
    for kv in db.scan_prefix(b"wab/") {
        batch.remove(kv?.0);
    }
    for (old, new, n) in [("wam/", "pid", 1), ("wau/", "chs", 2)] {
        for kv in db.scan_prefix(old.as_bytes()) {
            let (k, v) = kv?;
            let rest = String::from_utf8_lossy(&k[old.len()..]).into_owned();
            if let Some((org, id)) = rest.split_once('/') {
                batch.insert(key(&[new, org, id]), v);
                counts[n] += 1;
            }
            batch.remove(k);
        }
    }
    batch.insert(LAYOUT_KEY, &LAYOUT.to_be_bytes());
    db.apply_batch(batch)?;
    db.checkpoint()?;
    if counts.iter().any(|&n| n > 0) {
        tracing::info!(
            bots = counts[0],
            provider_ids = counts[1],
            channel_states = counts[2],
            "data dir upgraded from layout {layout} to {LAYOUT}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whatsapp_only_layout_is_upgraded_once() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path().join("db")).unwrap();
        let db = Kv::Local(super::super::engine::Engine::open(tree, dir.path()).unwrap());
        let old = serde_json::json!({"botID": 7, "kind": "whatsapp", "name": "x", "created": "",
            "whatsapp": {"phone_number_id": "1", "waba_id": "2", "graph_base_url": null,
                "access_token": "plain:t", "app_secret": null, "verify_token": "plain:v"}});
        db.insert(
            "bot/o/00000000000000000007",
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        db.insert("wab/00000000000000000007", "o").unwrap();
        db.insert("wam/o/wamid.A", "m1").unwrap();
        db.insert("wau/o/7-wa3-1", "{}").unwrap();
        upgrade(&db).unwrap();
        let bot: crate::model::Bot =
            serde_json::from_slice(&db.get("bot/o/00000000000000000007").unwrap().unwrap())
                .unwrap();
        assert_eq!(bot.settings["phone_number_id"], "1");
        assert!(!bot.settings.contains_key("graph_base_url"));
        assert_eq!(bot.secrets["access_token"].0, "plain:t");
        assert!(!bot.secrets.contains_key("app_secret"));
        assert_eq!(db.get(bix_key(7)).unwrap().unwrap(), "o");
        assert_eq!(db.get("pid/o/wamid.A").unwrap().unwrap(), "m1");
        assert!(db.get("wam/o/wamid.A").unwrap().is_none());
        assert!(db.get("chs/o/7-wa3-1").unwrap().is_some());
        assert!(db.get("wab/00000000000000000007").unwrap().is_none());
        // Applied once: a second open changes nothing.
        db.insert("wam/o/late", "m2").unwrap();
        upgrade(&db).unwrap();
        assert!(db.get("pid/o/late").unwrap().is_none());
    }
}
