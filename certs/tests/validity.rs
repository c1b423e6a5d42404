//! When existing material may be kept and when it must be replaced.

use gpu_autoscaler_certs::{
    CertBundle, CertRequest, InvalidReason, PemBundle, SubjectAltName, generate_at, inspect,
    is_valid_for,
};
use time::{Duration, OffsetDateTime};

const WINDOW: Duration = Duration::days(30);

fn t0() -> OffsetDateTime {
    // A fixed instant keeps the tests independent of the wall clock.
    OffsetDateTime::from_unix_timestamp(1_760_000_000).unwrap()
}

fn request() -> CertRequest {
    let mut req = CertRequest::new("hook", "gpu");
    req.extra_sans = vec![SubjectAltName::parse("127.0.0.1").unwrap()];
    req
}

fn bundle_at(now: OffsetDateTime) -> CertBundle {
    generate_at(&request(), now).unwrap()
}

#[test]
fn fresh_bundle_is_valid_and_inspectable() {
    let bundle = bundle_at(t0());
    let info = is_valid_for(&bundle.pems(), &request(), t0(), WINDOW).unwrap();
    assert_eq!(info.not_after, t0() + Duration::days(365));
    assert_eq!(info, inspect(&bundle.pems()).unwrap());
    let names: Vec<String> = info
        .subject_alt_names
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "hook",
            "hook.gpu",
            "hook.gpu.svc",
            "hook.gpu.svc.cluster.local",
            "127.0.0.1"
        ]
    );
}

#[test]
fn still_valid_just_outside_the_window() {
    let bundle = bundle_at(t0());
    let later = t0() + Duration::days(365) - WINDOW;
    assert!(is_valid_for(&bundle.pems(), &request(), later, WINDOW).is_ok());
}

#[test]
fn near_expiry_is_renewed() {
    let bundle = bundle_at(t0());
    let later = t0() + Duration::days(340);
    assert_eq!(
        is_valid_for(&bundle.pems(), &request(), later, WINDOW),
        Err(InvalidReason::ExpiresSoon(t0() + Duration::days(365)))
    );
}

#[test]
fn expired_is_renewed() {
    let bundle = bundle_at(t0() - Duration::days(400));
    assert_eq!(
        is_valid_for(&bundle.pems(), &request(), t0(), WINDOW),
        Err(InvalidReason::Expired(t0() - Duration::days(35)))
    );
}

#[test]
fn not_yet_valid_is_renewed() {
    let bundle = bundle_at(t0() + Duration::days(2));
    assert!(matches!(
        is_valid_for(&bundle.pems(), &request(), t0(), WINDOW),
        Err(InvalidReason::NotYetValid(_))
    ));
}

#[test]
fn ca_expiring_before_the_window_is_renewed() {
    let mut req = request();
    req.validity_days = 60;
    req.ca_validity_days = 60;
    let bundle = generate_at(&req, t0()).unwrap();
    // The leaf is fine for a 10-day window, the CA too; with a 70-day window both fail, and the
    // leaf is reported first.
    assert!(is_valid_for(&bundle.pems(), &req, t0(), Duration::days(10)).is_ok());
    assert!(matches!(
        is_valid_for(&bundle.pems(), &req, t0(), Duration::days(70)),
        Err(InvalidReason::ExpiresSoon(_))
    ));
}

#[test]
fn wrong_service_or_namespace_is_renewed() {
    let bundle = bundle_at(t0());
    let mut other_ns = request();
    other_ns.namespace = "elsewhere".into();
    assert_eq!(
        is_valid_for(&bundle.pems(), &other_ns, t0(), WINDOW),
        Err(InvalidReason::MissingName(SubjectAltName::Dns(
            "hook.elsewhere".into()
        )))
    );
    let mut more_names = request();
    more_names
        .extra_sans
        .push(SubjectAltName::parse("10.0.0.7").unwrap());
    assert_eq!(
        is_valid_for(&bundle.pems(), &more_names, t0(), WINDOW),
        Err(InvalidReason::MissingName(SubjectAltName::Ip(
            "10.0.0.7".parse().unwrap()
        )))
    );
    // Fewer names than the certificate has is fine.
    assert!(
        is_valid_for(
            &bundle.pems(),
            &CertRequest::new("hook", "gpu"),
            t0(),
            WINDOW
        )
        .is_ok()
    );
}

#[test]
fn foreign_ca_is_renewed() {
    let bundle = bundle_at(t0());
    let stranger = bundle_at(t0());
    let pems = PemBundle {
        ca: stranger.ca_pem.as_bytes(),
        ..bundle.pems()
    };
    assert!(matches!(
        is_valid_for(&pems, &request(), t0(), WINDOW),
        Err(InvalidReason::Untrusted(_))
    ));
}

#[test]
fn foreign_key_is_renewed() {
    let bundle = bundle_at(t0());
    let stranger = bundle_at(t0());
    let pems = PemBundle {
        key: stranger.key_pem.as_bytes(),
        ..bundle.pems()
    };
    assert_eq!(
        is_valid_for(&pems, &request(), t0(), WINDOW),
        Err(InvalidReason::KeyMismatch)
    );
}

#[test]
fn garbage_is_renewed_without_panicking() {
    let bundle = bundle_at(t0());
    for pems in [
        PemBundle {
            cert: b"",
            ..bundle.pems()
        },
        PemBundle {
            ca: b"not pem at all",
            ..bundle.pems()
        },
        PemBundle {
            key: b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ..bundle.pems()
        },
        PemBundle {
            cert: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ..bundle.pems()
        },
    ] {
        assert!(matches!(
            is_valid_for(&pems, &request(), t0(), WINDOW),
            Err(InvalidReason::Unreadable(_))
        ));
    }
}
