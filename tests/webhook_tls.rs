//! The webhook over real TLS, started in-process on 127.0.0.1:0, with a client that trusts
//! only a CA made for the test.

#[path = "structural/mod.rs"]
mod structural;
mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hyper::StatusCode;
use pgpilot::config::Config;
use pgpilot::manifest::from_value;
use pgpilot::resolve::resolve;
use pgpilot::validate::validate;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::client::Http;
use support::reviews::{body, patched, response, review, sample, samples};
use support::server::{Options, TestServer};

/// The object the webhook must produce: the submitted one with its spec resolved.
fn resolved(object: &Value, old: Option<&Value>) -> Value {
    let spec = from_value(object.clone()).unwrap().spec;
    let old = old.map(|o| from_value(o.clone()).unwrap().spec);
    let mut out = object.clone();
    out["spec"] = serde_json::to_value(resolve(&spec, old.as_ref(), &Config::default())).unwrap();
    out
}

#[tokio::test]
async fn each_sample_is_patched_to_exactly_its_resolved_form_and_admitted() {
    let server = TestServer::start().await;
    for (name, object) in samples() {
        let uid = format!("create-{name}");
        let (status, answer) = server
            .client
            .post(
                "/mutate",
                body(&review(&uid, "CREATE", Some(&object), None)),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{name}");
        let mutated = response(&answer, &uid);
        assert_eq!(mutated["allowed"], true, "{name}: {mutated}");
        let stored = patched(&object, &mutated);
        assert_eq!(stored, resolved(&object, None), "{name}");
        assert_eq!(
            stored["metadata"], object["metadata"],
            "{name}: metadata untouched"
        );

        let (status, answer) = server
            .client
            .post(
                "/validate",
                body(&review(&uid, "CREATE", Some(&stored), None)),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let validated = response(&answer, &uid);
        assert_eq!(validated["allowed"], true, "{name}: {validated}");

        // Resolution is idempotent: the stored object needs no further patch.
        let (_, answer) = server
            .client
            .post(
                "/mutate",
                body(&review(&uid, "CREATE", Some(&stored), None)),
            )
            .await
            .unwrap();
        let again = response(&answer, &uid);
        assert_eq!(again["allowed"], true);
        assert!(again.get("patch").is_none(), "{name}: {again}");
    }
}

/// Admits `object` through /mutate as CREATE and returns what would be stored.
async fn create(server: &TestServer, object: &Value) -> Value {
    let (_, answer) = server
        .client
        .post(
            "/mutate",
            body(&review("create", "CREATE", Some(object), None)),
        )
        .await
        .unwrap();
    patched(object, &response(&answer, "create"))
}

fn shared_buffers(object: &Value) -> &Value {
    &object["spec"]["postgresql"]["parameters"]["shared_buffers"]
}

#[tokio::test]
async fn raising_memory_on_update_retunes_shared_buffers_and_keeps_explicit_ones() {
    let server = TestServer::start().await;
    let stored = create(&server, &sample("minimal.yaml")).await;
    let before = shared_buffers(&stored).clone();
    assert!(before.is_string(), "{stored}");

    let mut bigger = stored.clone();
    bigger["spec"]["resources"]["requests"]["memory"] = json!("8Gi");
    let (_, answer) = server
        .client
        .post(
            "/mutate",
            body(&review("update", "UPDATE", Some(&bigger), Some(&stored))),
        )
        .await
        .unwrap();
    let updated = patched(&bigger, &response(&answer, "update"));
    assert_eq!(updated, resolved(&bigger, Some(&stored)));
    assert_ne!(shared_buffers(&updated), &before, "{updated}");
    // The memory limit was derived from the request too, so it followed.
    assert_eq!(updated["spec"]["resources"]["limits"]["memory"], "8Gi");

    let (_, answer) = server
        .client
        .post(
            "/validate",
            body(&review("update", "UPDATE", Some(&updated), Some(&stored))),
        )
        .await
        .unwrap();
    let validated = response(&answer, "update");
    assert_eq!(validated["allowed"], true);
    // The retuned shared_buffers takes a restart, and kubectl is told so.
    let restart = format!(
        "spec.postgresql.parameters[shared_buffers]: changed from {} to {}: takes effect after a restart",
        before.as_str().unwrap(),
        shared_buffers(&updated).as_str().unwrap()
    );
    assert!(
        validated["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.starts_with(&restart)))),
        "no {restart:?} in {validated}"
    );

    let mut pinned = bigger.clone();
    pinned["spec"]["postgresql"]["parameters"]["shared_buffers"] = json!("300MB");
    let (_, answer) = server
        .client
        .post(
            "/mutate",
            body(&review("pinned", "UPDATE", Some(&pinned), Some(&stored))),
        )
        .await
        .unwrap();
    let updated = patched(&pinned, &response(&answer, "pinned"));
    assert_eq!(shared_buffers(&updated), "300MB");
}

#[tokio::test]
async fn a_bad_spec_is_denied_with_every_field_path() {
    let server = TestServer::start().await;
    let mut bad = sample("ha-backup-pooler.yaml");
    bad["spec"]["instances"] = json!(0);
    bad["spec"]["postgresVersion"] = json!(12);
    bad["spec"]["patroni"]["ttl"] = json!(5);
    bad["spec"]["postgresql"]["parameters"]["listen_addresses"] = json!("*");
    bad["spec"]["pooler"]["mode"] = json!("statement");
    let expected = validate(&from_value(bad.clone()).unwrap(), None).errors;
    let paths: Vec<&str> = expected.iter().map(|e| e.path.as_str()).collect();
    for path in [
        "spec.instances",
        "spec.postgresVersion",
        "spec.patroni.ttl",
        "spec.postgresql.parameters[listen_addresses]",
    ] {
        assert!(
            paths.contains(&path),
            "validate does not report {path}: {paths:?}"
        );
    }

    let (status, answer) = server
        .client
        .post(
            "/validate",
            body(&review("bad", "CREATE", Some(&bad), None)),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let denied = response(&answer, "bad");
    assert_eq!(denied["allowed"], false);
    let status = &denied["status"];
    assert_eq!(status["code"], 422);
    assert_eq!(status["reason"], "Invalid");
    let listed: Vec<String> = expected.iter().map(ToString::to_string).collect();
    assert_eq!(
        status["message"],
        format!(
            "PostgresCluster.pgpilot.io \"orders\" is invalid: [{}]",
            listed.join(", ")
        )
    );
    assert_eq!(status["details"]["name"], "orders");
    assert_eq!(status["details"]["group"], "pgpilot.io");
    assert_eq!(status["details"]["kind"], "PostgresCluster");
    let causes: Vec<Value> = expected
        .iter()
        .map(|e| json!({"field": e.path, "reason": e.reason(), "message": e.message()}))
        .collect();
    assert_eq!(status["details"]["causes"], json!(causes));
    // Warnings come back even on a denial: kubectl prints them.
    let warnings = denied["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("spec.pooler.mode")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn delete_connect_and_dry_run() {
    let server = TestServer::start().await;
    let object = sample("minimal.yaml");
    for path in ["/mutate", "/validate"] {
        for (operation, old) in [("DELETE", Some(&object)), ("CONNECT", None)] {
            let (status, answer) = server
                .client
                .post(path, body(&review("op", operation, None, old)))
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK);
            let answered = response(&answer, "op");
            assert_eq!(answered["allowed"], true, "{path} {operation}: {answered}");
            assert!(answered.get("patch").is_none());
        }
    }
    // A dry run is answered exactly like the real request: the webhook has no side effects.
    let mut dry = review("op", "CREATE", Some(&object), None);
    let (_, real) = server.client.post("/mutate", body(&dry)).await.unwrap();
    dry["request"]["dryRun"] = json!(true);
    let (_, dry) = server.client.post("/mutate", body(&dry)).await.unwrap();
    assert_eq!(real, dry);
}

enum Expect {
    /// An HTTP error status.
    Status(StatusCode),
    /// A denial echoing the uid, whose message contains the text.
    Denied(&'static str),
}

#[tokio::test]
async fn malformed_bodies_are_refused_and_the_server_keeps_answering() {
    let server = TestServer::start().await;
    let object = sample("minimal.yaml");
    let good = body(&review("good", "CREATE", Some(&object), None));
    let with_object = |o: Value| body(&review("bad", "CREATE", Some(&o), None));

    let mut deployment = object.clone();
    deployment["apiVersion"] = json!("apps/v1");
    deployment["kind"] = json!("Deployment");
    let mut no_request = review("bad", "CREATE", Some(&object), None);
    no_request.as_object_mut().unwrap().remove("request");
    let mut no_uid = review("bad", "CREATE", Some(&object), None);
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut old_version = review("bad", "CREATE", Some(&object), None);
    old_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut bad_operation = review("bad", "CREATE", Some(&object), None);
    bad_operation["request"]["operation"] = json!("PATCH");
    let mut huge =
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","padding":""#.to_vec();
    huge.resize(10 << 20, b'x');
    huge.extend_from_slice(br#""}"#);

    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "empty body",
            vec![],
            Expect::Status(StatusCode::BAD_REQUEST),
        ),
        (
            "not JSON",
            b"hello".to_vec(),
            Expect::Status(StatusCode::BAD_REQUEST),
        ),
        (
            "truncated JSON",
            good[..good.len() / 2].to_vec(),
            Expect::Status(StatusCode::BAD_REQUEST),
        ),
        (
            "a JSON list",
            b"[1, 2]".to_vec(),
            Expect::Status(StatusCode::BAD_REQUEST),
        ),
        (
            "10 MiB",
            huge,
            Expect::Status(StatusCode::PAYLOAD_TOO_LARGE),
        ),
        (
            "no request",
            body(&no_request),
            Expect::Status(StatusCode::BAD_REQUEST),
        ),
        (
            "no uid",
            body(&no_uid),
            Expect::Status(StatusCode::BAD_REQUEST),
        ),
        (
            "v1beta1 review",
            body(&old_version),
            Expect::Status(StatusCode::BAD_REQUEST),
        ),
        (
            "unknown operation",
            body(&bad_operation),
            Expect::Denied("request.operation"),
        ),
        (
            "null object",
            body(&review("bad", "CREATE", None, None)),
            Expect::Denied("request.object: missing on CREATE"),
        ),
        (
            "UPDATE without oldObject",
            body(&review("bad", "UPDATE", Some(&object), None)),
            Expect::Denied("request.oldObject: missing"),
        ),
        (
            "a Deployment",
            with_object(deployment),
            Expect::Denied("expected apiVersion pgpilot.io/v1 and kind PostgresCluster"),
        ),
        (
            "a list as object",
            with_object(json!([1])),
            Expect::Denied("request.object: expected an object"),
        ),
    ];

    // A keep-alive connection opened before the bad requests must keep working too.
    let mut steady = server.client.connect(Http::H1).await.unwrap();
    for path in ["/mutate", "/validate"] {
        for (name, bad, expect) in &cases {
            let (status, answer) = server.client.post(path, bad.clone()).await.unwrap();
            let text = String::from_utf8_lossy(&answer);
            match expect {
                Expect::Status(code) => {
                    assert_eq!(status, *code, "{path} {name}: {text}");
                    assert!(!text.is_empty(), "{path} {name}: a 4xx says why");
                }
                Expect::Denied(why) => {
                    assert_eq!(status, StatusCode::OK, "{path} {name}: {text}");
                    let denied = response(&answer, "bad");
                    assert_eq!(denied["allowed"], false, "{path} {name}");
                    assert_eq!(denied["status"]["code"], 400, "{path} {name}");
                    let message = denied["status"]["message"].as_str().unwrap();
                    assert!(message.contains(why), "{path} {name}: {message}");
                }
            }
            for (status, answer) in [
                server.client.post(path, good.clone()).await.unwrap(),
                steady.post(path, good.clone()).await.unwrap(),
            ] {
                assert_eq!(status, StatusCode::OK, "{path} after {name}");
                assert_eq!(response(&answer, "good")["allowed"], true);
            }
        }
    }
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_no_http_answer() {
    let server = TestServer::start().await;
    let mut tcp = tokio::net::TcpStream::connect(server.client.addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closes the connection");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // And the server still serves TLS.
    assert_eq!(
        server.client.get("/healthz").await.unwrap().0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn http2_and_both_tls_versions_are_served() {
    let server = TestServer::start().await;
    let object = sample("ha-backup-pooler.yaml");
    let request = body(&review("h2", "CREATE", Some(&object), None));

    let mut h2 = server.client.connect(Http::H2).await.unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    for _ in 0..3 {
        let (status, answer) = h2.post("/mutate", request.clone()).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            patched(&object, &response(&answer, "h2")),
            resolved(&object, None)
        );
    }
    let h1 = server.client.connect(Http::H1).await.unwrap();
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));

    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut conn = server
            .client
            .connect_with(Http::H1, &[version])
            .await
            .unwrap();
        assert_eq!(conn.tls_version, Some(version.version));
        assert_eq!(conn.get("/healthz").await.unwrap().0, StatusCode::OK);
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::start().await;
    let object = sample("minimal.yaml");
    let mut conn = server.client.connect(Http::H1).await.unwrap();
    assert_eq!(
        conn.get("/healthz").await.unwrap(),
        (StatusCode::OK, "ok".into())
    );
    assert_eq!(
        conn.get("/readyz").await.unwrap(),
        (StatusCode::OK, "ok".into())
    );
    conn.post("/mutate", body(&review("m", "CREATE", Some(&object), None)))
        .await
        .unwrap();
    conn.post("/validate", b"nope".to_vec()).await.unwrap();
    assert_eq!(conn.get("/nowhere").await.unwrap().0, StatusCode::NOT_FOUND);

    let (status, text) = conn.get("/metrics").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(text.to_vec()).unwrap();
    for line in [
        r#"pgpilot_webhook_requests_total{endpoint="mutate",outcome="patched"} 1"#,
        r#"pgpilot_webhook_requests_total{endpoint="validate",outcome="bad_request"} 1"#,
        r#"pgpilot_webhook_requests_total{endpoint="other",outcome="client_error"} 1"#,
        r#"pgpilot_webhook_requests_total{endpoint="healthz",outcome="ok"} 1"#,
        r#"pgpilot_webhook_request_duration_seconds_bucket{endpoint="mutate",outcome="patched",le="+Inf"} 1"#,
        r#"pgpilot_webhook_request_duration_seconds_count{endpoint="mutate",outcome="patched"} 1"#,
        "# TYPE pgpilot_webhook_request_duration_seconds histogram",
        r#"pgpilot_webhook_certificate_reloads_total{result="failed"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

async fn boom() -> &'static str {
    panic!("boom")
}

#[tokio::test]
async fn a_panicking_handler_gets_a_500_and_the_server_lives_on() {
    let routes = Router::new()
        .route("/boom", post(boom))
        .route("/ok", get(|| async { "fine" }));
    let server = TestServer::start_with(Options {
        routes: Some(routes),
        ..Options::default()
    })
    .await;
    let mut conn = server.client.connect(Http::H1).await.unwrap();
    let (status, _) = conn.post("/boom", b"{}".to_vec()).await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        conn.get("/ok").await.unwrap(),
        (StatusCode::OK, "fine".into())
    );
    assert_eq!(server.client.get("/ok").await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn a_request_that_takes_too_long_gets_a_408() {
    let routes = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    );
    let server = TestServer::start_with(Options {
        routes: Some(routes),
        request_timeout: Duration::from_millis(200),
        ..Options::default()
    })
    .await;
    let (status, _) = server.client.get("/slow").await.unwrap();
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_then_refuses_connections() {
    // The handler says when it runs, so the shutdown comes while the request is in flight
    // however slowly the client got there.
    let started = Arc::new(tokio::sync::Notify::new());
    let routes = Router::new().route(
        "/slow",
        get({
            let started = started.clone();
            move || async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(500)).await;
                "done"
            }
        }),
    );
    let server = TestServer::start_with(Options {
        routes: Some(routes),
        ..Options::default()
    })
    .await;
    let client = server.client.clone();
    let mut conn = client.connect(Http::H1).await.unwrap();
    let in_flight = tokio::spawn(async move { conn.get("/slow").await });
    tokio::time::timeout(Duration::from_secs(30), started.notified())
        .await
        .expect("the request reaches the handler");

    let stopped = server.shut_down();
    let (status, text) = in_flight.await.unwrap().unwrap();
    assert_eq!((status, &text[..]), (StatusCode::OK, &b"done"[..]));
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the server stops once the request is answered")
        .unwrap();
    assert!(
        client.connect(Http::H1).await.is_err(),
        "the port is closed"
    );
}

/// Both endpoints deny a spec with structural mistakes with every error, structural and
/// not, as one 422 with a cause per error; an UPDATE whose stored object cannot be read is
/// checked as a creation, so the edit that fixes it goes through.
#[tokio::test]
async fn structural_mistakes_are_denied_with_every_error_at_once() {
    let server = TestServer::start().await;
    for case in structural::cases() {
        let object: Value = serde_yaml::from_str(&case.yaml).unwrap();
        for path in ["/mutate", "/validate"] {
            let (status, answer) = server
                .client
                .post(
                    path,
                    body(&review(case.name, "CREATE", Some(&object), None)),
                )
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK, "{path} {}", case.name);
            let denied = response(&answer, case.name);
            assert_eq!(denied["allowed"], false, "{path} {}", case.name);
            assert_eq!(
                denied["status"]["code"], 422,
                "{path} {}: {denied}",
                case.name
            );
            assert_eq!(denied["status"]["reason"], "Invalid");
            let causes: Vec<String> = denied["status"]["details"]["causes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    format!(
                        "{}: {}",
                        c["field"].as_str().unwrap(),
                        c["message"].as_str().unwrap()
                    )
                })
                .collect();
            assert_eq!(causes, case.errors, "{path} {}", case.name);
            let message = denied["status"]["message"].as_str().unwrap();
            assert!(
                message.ends_with(&format!("[{}]", case.errors.join(", "))),
                "{path} {}: {message}",
                case.name
            );
        }
    }

    // Stored while the webhook was bypassed: the fix is admitted and resolved.
    let mut stored = sample("minimal.yaml");
    stored["spec"]["instances"] = json!("three");
    let fixed = sample("minimal.yaml");
    let name = fixed["metadata"]["name"].as_str().unwrap().to_owned();
    for path in ["/mutate", "/validate"] {
        let (_, answer) = server
            .client
            .post(
                path,
                body(&review(&name, "UPDATE", Some(&fixed), Some(&stored))),
            )
            .await
            .unwrap();
        assert_eq!(response(&answer, &name)["allowed"], true, "{path}");
    }
}
