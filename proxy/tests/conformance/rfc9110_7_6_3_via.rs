//! RFC 9110 §7.6.3: a gateway MUST send `Via` in each request it forwards, after any `Via`
//! it received, naming the protocol it received the request with.

use crate::common::get;
use crate::edge;
use crate::origin::{Origin, Resp};

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_requests_carry_via_after_the_clients() {
    let origin = Origin::start().await;
    origin.on("/rfc/via", |_| {
        Resp::new(200, &[("cache-control", "no-store")], "v")
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    let vias = |origin: &Origin| -> Vec<String> {
        origin
            .last_headers("/rfc/via")
            .into_iter()
            .filter(|(k, _)| k == "via")
            .map(|(_, v)| v)
            .collect()
    };
    assert_eq!(get(&e.url("/rfc/via"), &[]).await.status, 200);
    assert_eq!(vias(&origin), ["1.1 komora-edge"]);
    get(&e.url("/rfc/via"), &[("via", "1.0 fred, 1.1 p.example")]).await;
    let got = vias(&origin).join(", ");
    assert_eq!(got, "1.0 fred, 1.1 p.example, 1.1 komora-edge");
    assert_eq!(origin.count("/rfc/via"), 2);
}
