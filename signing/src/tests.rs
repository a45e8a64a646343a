//! Unit tests of the URL format: signing, verification, the key ring and the window.
#![allow(clippy::unwrap_used)]

use super::*;

const NOW: u64 = 1_000;

fn ring(keys: &[&str]) -> KeyRing {
    KeyRing::parse(&keys.join(",")).unwrap()
}

fn key(c: char) -> String {
    c.to_string().repeat(MIN_KEY_LEN)
}

#[test]
fn the_format_is_hmac_sha256_of_object_dot_exp() {
    // Computed outside this crate:
    // printf '%s' 0f1e2d.1700000000 | openssl dgst -sha256 -hmac "$(printf 'k%.0s' $(seq 32))"
    let r = ring(&[&key('k')]);
    assert_eq!(
        r.sign("0f1e2d", 1_700_000_000),
        "018c768a3a6ace7bd111658f278faa2e513078bf35b9a49b1cdaa6b88ab0fbbe"
    );
    assert_eq!(
        r.query("0f1e2d", 1_700_000_000),
        "exp=1700000000&sig=018c768a3a6ace7bd111658f278faa2e513078bf35b9a49b1cdaa6b88ab0fbbe"
    );
}

#[test]
fn a_good_signature_verifies_and_returns_exp() {
    let r = ring(&[&key('a')]);
    let sig = r.sign("abc", 2_000);
    assert_eq!(r.verify("abc", Some("2000"), Some(&sig), NOW), Ok(2_000));
    let q = r.query("abc", 2_000);
    let query = format!("cb=1&{q}&exp=9");
    let (exp, sig) = signature_params(Some(&query));
    assert_eq!(r.verify("abc", exp, sig, NOW), Ok(2_000));
}

#[test]
fn an_expired_url_is_refused() {
    let r = ring(&[&key('a')]);
    let sig = r.sign("abc", NOW);
    assert_eq!(
        r.verify("abc", Some("1000"), Some(&sig), NOW),
        Err(Denied::Expired)
    );
    assert_eq!(
        r.verify("abc", Some("999"), Some(&r.sign("abc", 999)), NOW),
        Err(Denied::Expired)
    );
}

#[test]
fn a_wrong_key_is_refused() {
    let signer = ring(&[&key('a')]);
    let other = ring(&[&key('b')]);
    let sig = signer.sign("abc", 2_000);
    assert_eq!(
        other.verify("abc", Some("2000"), Some(&sig), NOW),
        Err(Denied::BadSignature)
    );
    // An empty ring verifies nothing.
    assert_eq!(
        KeyRing::default().verify("abc", Some("2000"), Some(&sig), NOW),
        Err(Denied::BadSignature)
    );
}

#[test]
fn a_tampered_path_or_exp_is_refused() {
    let r = ring(&[&key('a')]);
    let sig = r.sign("abc", 2_000);
    assert_eq!(
        r.verify("abd", Some("2000"), Some(&sig), NOW),
        Err(Denied::BadSignature)
    );
    assert_eq!(
        r.verify(object_of("/media/abd"), Some("2000"), Some(&sig), NOW),
        Err(Denied::BadSignature)
    );
    assert_eq!(
        r.verify("abc", Some("2001"), Some(&sig), NOW),
        Err(Denied::BadSignature)
    );
    // Not the canonical decimal that was signed.
    assert_eq!(
        r.verify("abc", Some("02000"), Some(&sig), NOW),
        Err(Denied::BadSignature)
    );
    assert_eq!(
        r.verify("", Some("2000"), Some(&sig), NOW),
        Err(Denied::BadSignature)
    );
    // One hex digit changed.
    let mut bad = sig.clone().into_bytes();
    bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
    let bad = String::from_utf8(bad).unwrap();
    assert_eq!(
        r.verify("abc", Some("2000"), Some(&bad), NOW),
        Err(Denied::BadSignature)
    );
}

#[test]
fn malformed_or_missing_parameters_are_unsigned() {
    let r = ring(&[&key('a')]);
    let sig = r.sign("abc", 2_000);
    for (exp, s) in [
        (None, Some(sig.as_str())),
        (Some("2000"), None),
        (Some(""), Some(sig.as_str())),
        (Some("-5"), Some(sig.as_str())),
        (Some("99999999999999999999999"), Some(sig.as_str())),
        (Some("2000"), Some(&sig[..63])),
        (Some("2000"), Some("zz".repeat(32).as_str())),
    ] {
        assert_eq!(
            r.verify("abc", exp, s, NOW),
            Err(Denied::Unsigned),
            "{exp:?} {s:?}"
        );
    }
    assert_eq!(signature_params(None), (None, None));
}

#[test]
fn rotated_keys_first_signs_every_one_verifies() {
    let (old, new) = (key('o'), key('n'));
    let before = ring(&[&old]);
    let during = ring(&[&new, &old]);
    let after = ring(&[&new]);
    let old_url = before.sign("abc", 2_000);
    let new_url = during.sign("abc", 2_000);
    // The new ring signs with the new key ...
    assert_eq!(new_url, after.sign("abc", 2_000));
    assert_ne!(new_url, old_url);
    // ... and still accepts URLs signed before the rotation.
    assert_eq!(
        during.verify("abc", Some("2000"), Some(&old_url), NOW),
        Ok(2_000)
    );
    assert_eq!(
        during.verify("abc", Some("2000"), Some(&new_url), NOW),
        Ok(2_000)
    );
    // Once the old key is dropped, its URLs stop working.
    assert_eq!(
        after.verify("abc", Some("2000"), Some(&old_url), NOW),
        Err(Denied::BadSignature)
    );
    assert_eq!(during.len(), 2);
}

#[test]
fn keys_are_checked_without_echoing_them() {
    assert!(KeyRing::parse(" , ").unwrap().is_empty());
    assert_eq!(
        KeyRing::parse_non_empty(" , ").unwrap_err(),
        KeyError::Empty
    );
    let e = KeyRing::parse(&format!("{},short", key('a'))).unwrap_err();
    assert_eq!(e, KeyError::TooShort { index: 2, len: 5 });
    let text = e.to_string();
    assert!(text.contains("key 2") && !text.contains("short"), "{text}");
    assert_eq!(
        KeyRing::parse(&format!(" {} , ", key('a'))).unwrap().len(),
        1
    );
    let debug = format!("{:?}", ring(&[&key('s')]));
    assert!(!debug.contains("sss"), "{debug}");
}

#[test]
fn expiry_is_at_least_one_window_and_less_than_two() {
    assert_eq!(expiry(1000, 100), 1100);
    assert_eq!(expiry(1001, 100), 1200);
    assert_eq!(expiry(1099, 100), 1200);
    for now in 1000..1300 {
        let left = expiry(now, 100) - now;
        assert!((100..200).contains(&left), "{now}: {left}");
    }
    assert_eq!(expiry(5, 0), 6);
}
