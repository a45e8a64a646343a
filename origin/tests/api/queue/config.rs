//! `[queue]`, `[ai]` and `[platforms.*]` validation: every problem with its key path.

use komora_origin::config::Config;

fn errors(toml: &str) -> Vec<(String, String)> {
    match Config::parse("<t>", toml) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.into_iter().map(|e| (e.key, e.reason)).collect(),
    }
}

#[test]
fn defaults_are_valid_and_route_by_kind() {
    let c = Config::parse("<t>", "").unwrap();
    assert_eq!(c.queue.weights, [6, 3, 1]);
    assert_eq!(c.queue.kind("send_message").queue, "high");
    assert_eq!(c.queue.kind("process_ai_reply").queue, "high");
    assert_eq!(c.queue.kind("download_and_save_media").queue, "low");
    assert_eq!(c.queue.kind("anything").queue, "default");
    assert!(!c.ai.enabled);
    assert!(c.platforms.platforms.is_empty());
}

#[test]
fn every_error_has_its_key_path() {
    let errs = errors(
        "[queue]\nlease_ms = 10\npoll_ms = 0\nweights = { high = 6, default = 3, low = 0 }\n\
         [queue.kinds.send_message]\nqueue = \"urgent\"\nmax_attempts = 0\n\
         backoff_base_ms = 5000\nbackoff_max_ms = 10\n\
         [ai]\nenabled = true\nurl = \"ftp://x\"\ntimeout_ms = 1\n\
         [platforms.telegram]\nbase_url = \"nope\"\nwebhook_secret = \"short\"\n",
    );
    let keys: Vec<&str> = errs.iter().map(|(k, _)| k.as_str()).collect();
    for key in [
        "queue.lease_ms",
        "queue.poll_ms",
        "queue.weights.low",
        "queue.kinds.send_message.queue",
        "queue.kinds.send_message.max_attempts",
        "queue.kinds.send_message.backoff_max_ms",
        "ai.url",
        "ai.timeout_ms",
        "platforms.telegram.base_url",
        "platforms.telegram.webhook_secret",
    ] {
        assert!(keys.contains(&key), "{key} missing from {errs:?}");
    }
}

#[test]
fn unknown_keys_are_rejected() {
    let errs = errors("[queue]\nleese_ms = 1000\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "queue.leese_ms", "{errs:?}");
    assert!(errs[0].1.starts_with("unknown key"), "{errs:?}");
    let errs = errors("[platforms.telegram]\nbase_url = \"http://x\"\nwebhook_secret = \"0123456789abcdef\"\ntokn = \"x\"\n");
    assert!(!errs.is_empty());
}

/// The example handed to config/origin.toml parses as is.
pub const EXAMPLE: &str = r#"
[queue]
worker_in_server = false   # also run a worker inside `serve`
lease_ms = 30000           # claim validity without heartbeat (1000..=3600000)
heartbeat_ms = 10000       # lease renewal period (100..=lease_ms/2)
poll_ms = 200              # idle poll period (10..=60000)
claim_batch = 32           # tasks claimed per round trip (1..=1000)
worker_concurrency = 16    # tasks one worker runs at once (1..=1024)
sweep_ms = 5000            # expired-lease sweep + prune period (100..=3600000)
prune_after_hours = 168    # delete done tasks older than this (1..=87600)
weights = { high = 6, default = 3, low = 1 }   # weighted round-robin shares (1..=100 each)

[queue.kinds.send_message]
queue = "high"             # high | default | low
concurrency = 8            # per worker (1..=1024)
timeout_ms = 30000         # (10..=3600000)
max_attempts = 8           # then dead (1..=100)
backoff_base_ms = 1000     # doubled per attempt, ±25 % jitter
backoff_max_ms = 600000

[queue.kinds.process_ai_reply]
queue = "high"
timeout_ms = 60000

[queue.kinds.download_and_save_media]
queue = "low"
concurrency = 4
timeout_ms = 120000

[ai]
enabled = false
url = "https://rag.example.com/v1/answer"
api_key = ""               # env KOMORA_AI_API_KEY overrides
timeout_ms = 20000         # (100..=300000)
channels = ["telegram"]    # platforms the autobot answers on
history = 20               # messages of context sent (1..=200)

[platforms.telegram]
base_url = "https://api.telegram.org"
token = ""                 # env KOMORA_PLATFORM_TELEGRAM_TOKEN overrides
# webhook_secret: env KOMORA_PLATFORM_TELEGRAM_WEBHOOK_SECRET (unset = webhook disabled)
# office_id = 1            # office of new conversations (default: the first office)
timeout_ms = 10000         # (100..=120000)
media_max_bytes = 20971520 # (1..=2 GiB)
"#;

#[test]
fn example_parses() {
    let c = Config::parse("<example>", EXAMPLE).unwrap();
    assert_eq!(c.queue.kind("send_message").max_attempts, 8);
    assert_eq!(c.queue.kind("download_and_save_media").concurrency, 4);
    assert!(c.platforms.get("telegram").is_some());
}
