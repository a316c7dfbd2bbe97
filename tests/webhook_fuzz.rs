//! The randomized robustness run (`make fuzz`): at least 100 000 AdmissionReviews, mutated
//! from the samples (fields deleted or replaced by random JSON, wrong types, huge and
//! non-ASCII strings, deep nesting, truncated or random bodies), sent through the webhook's
//! full router in-process. Every answer must be a well-formed AdmissionReview echoing the
//! uid, or a 4xx; no panic (a panic would surface as a 500), and every patch must apply and
//! yield exactly the resolved object.
//!
//! A second oracle does not use `resolve`: every patched object, sent back as the API
//! server would send it, gets no further patch (a resolved spec is a fixed point), and
//! every object both webhooks admit renders its children.
//!
//! `cargo test` runs a bounded, seeded run (5 000 cases, the same seed every time) and
//! asserts that each kind of answer occurs; `make fuzz` runs 100 000 cases in release mode
//! with a fresh seed. Both print their seed: `FUZZ_SEED=N` replays a run, `FUZZ_CASES=N`
//! sets its length.

mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use pgpilot::config::Config;
use pgpilot::manifest::from_value;
use pgpilot::render::render;
use pgpilot::resolve::resolve;
use proptest::prelude::*;
use proptest::test_runner::{
    Config as RunnerConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use support::reviews::{patch, patched, review, samples};

/// The bounded run of `cargo test`: its length and its seed, fixed so that every run of the
/// suite checks the same cases.
const BOUNDED_CASES: u32 = 5_000;
const BOUNDED_SEED: u64 = 0x5047_5049_4c4f_5431;
/// The long run of `make fuzz`.
const LONG_CASES: u32 = 100_000;

#[derive(Clone, Debug)]
enum Mutation {
    Delete,
    Replace(Value),
    /// The value wrapped in this many arrays and objects.
    Nest(usize),
    HugeString(usize),
    Text(String),
    /// A number where a string was, and the reverse.
    SwapType,
}

#[derive(Clone, Debug)]
enum Payload {
    Review,
    Truncated(usize),
    Bytes(Vec<u8>),
    Json(Value),
}

#[derive(Clone, Debug)]
struct Case {
    sample: usize,
    operation: &'static str,
    validate: bool,
    /// (which node, within the spec or anywhere, and what to do to it)
    mutations: Vec<(usize, bool, Mutation)>,
    body: Payload,
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,24}".prop_map(Value::String),
        prop_oneof![
            Just("1Gi"),
            Just("-1Gi"),
            Just("0"),
            Just("1e400"),
            Just("9999999999999Ei"),
            Just(""),
            Just("repo1"),
            Just("sync"),
            Just("* * * * *"),
            Just("postgres"),
            Just("port"),
            Just("ghcr.io/x:latest"),
            Just("ClusterIssuer"),
            Just("é\u{0}\u{202e}"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::Delete),
        4 => json_value().prop_map(Mutation::Replace),
        1 => (1usize..200).prop_map(Mutation::Nest),
        1 => (1usize..65_536).prop_map(Mutation::HugeString),
        2 => "\\PC{0,40}".prop_map(Mutation::Text),
        2 => Just(Mutation::SwapType),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let body = prop_oneof![
        20 => Just(Payload::Review),
        1 => any::<usize>().prop_map(Payload::Truncated),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Payload::Bytes),
        1 => json_value().prop_map(Payload::Json),
    ];
    (
        any::<usize>(),
        prop::sample::select(vec!["CREATE", "UPDATE", "DELETE", "CONNECT"]),
        any::<bool>(),
        prop::collection::vec(
            (any::<usize>(), prop::bool::weighted(0.7), mutation()),
            0..5,
        ),
        body,
    )
        .prop_map(|(sample, operation, validate, mutations, body)| Case {
            sample,
            operation,
            validate,
            mutations,
            body,
        })
}

/// JSON pointers of every node under `prefix`, in document order.
fn pointers(value: &Value, prefix: String, out: &mut Vec<String>) {
    out.push(prefix.clone());
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                pointers(v, format!("{prefix}/{}", escape(k)), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{prefix}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn apply(review: &mut Value, selector: usize, in_spec: bool, mutation: &Mutation) {
    let root = if in_spec && review.pointer("/request/object/spec").is_some() {
        "/request/object/spec"
    } else {
        ""
    };
    let mut all = Vec::new();
    pointers(review.pointer(root).unwrap(), root.to_owned(), &mut all);
    let target = all[selector % all.len()].clone();
    if target.is_empty() {
        return; // the review itself: the body variants cover replacing it whole
    }
    let Some(node) = review.pointer_mut(&target) else {
        return;
    };
    match mutation {
        Mutation::Delete => {
            let (parent, key) = target.rsplit_once('/').unwrap();
            let key = key.replace("~1", "/").replace("~0", "~");
            match review.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(&key);
                }
                Some(Value::Array(items)) => {
                    if let Ok(i) = key.parse::<usize>() {
                        items.remove(i);
                    }
                }
                _ => {}
            }
        }
        Mutation::Replace(v) => *node = v.clone(),
        Mutation::Nest(depth) => {
            let mut v = node.take();
            for d in 0..*depth {
                v = if d % 2 == 0 {
                    Value::Array(vec![v])
                } else {
                    Value::Object(Map::from_iter([("x".to_owned(), v)]))
                };
            }
            *node = v;
        }
        Mutation::HugeString(n) => *node = Value::String("ż".repeat(*n / 2)),
        Mutation::Text(s) => *node = Value::String(s.clone()),
        Mutation::SwapType => {
            *node = match node.take() {
                Value::String(s) => s.parse::<i64>().map_or(json!(s.len()), Value::from),
                Value::Number(n) => Value::String(n.to_string()),
                other => Value::String(other.to_string()),
            }
        }
    }
}

struct Built {
    body: Vec<u8>,
    /// The review as sent, when the body is one.
    review: Option<Value>,
}

fn build(case: &Case, samples: &[Value]) -> Built {
    let object = &samples[case.sample % samples.len()];
    let (new, old) = match case.operation {
        "CREATE" | "CONNECT" => (Some(object), None),
        "UPDATE" => (Some(object), Some(object)),
        _ => (None, Some(object)),
    };
    let mut review = review("fuzz-uid", case.operation, new, old);
    for (selector, in_spec, mutation) in &case.mutations {
        apply(&mut review, *selector, *in_spec, mutation);
    }
    let body = serde_json::to_vec(&review).unwrap();
    match &case.body {
        Payload::Review => Built {
            // What the server reads: a float read back from text may differ in its last bit,
            // and nesting beyond serde_json's limit does not read at all.
            review: serde_json::from_slice(&body).ok(),
            body,
        },
        Payload::Truncated(at) => Built {
            body: body[..at % body.len().max(1)].to_vec(),
            review: None,
        },
        Payload::Bytes(bytes) => Built {
            body: bytes.clone(),
            review: None,
        },
        Payload::Json(v) => Built {
            body: serde_json::to_vec(v).unwrap(),
            review: None,
        },
    }
}

/// The checks on one answer.
fn check(
    built: &Built,
    path: &str,
    status: StatusCode,
    answer: &[u8],
) -> Result<(), TestCaseError> {
    prop_assert!(
        status == StatusCode::OK || status.is_client_error(),
        "{path}: HTTP {status}: {}",
        String::from_utf8_lossy(answer)
    );
    if status.is_client_error() {
        prop_assert!(!answer.is_empty(), "{path}: a {status} without a message");
        return Ok(());
    }
    let answer: Value = serde_json::from_slice(answer)
        .map_err(|e| TestCaseError::fail(format!("{path}: answer is not JSON: {e}")))?;
    prop_assert_eq!(&answer["apiVersion"], "admission.k8s.io/v1");
    prop_assert_eq!(&answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    let sent = built.review.as_ref().map(|r| &r["request"]["uid"]);
    prop_assert_eq!(
        Some(&response["uid"]),
        sent,
        "{}: uid not echoed: {}",
        path,
        answer
    );
    let allowed = response["allowed"]
        .as_bool()
        .ok_or_else(|| TestCaseError::fail(format!("{path}: no allowed: {answer}")))?;
    if !allowed {
        let message = response["status"]["message"].as_str().unwrap_or("");
        prop_assert!(
            !message.is_empty(),
            "{path}: a denial without a message: {answer}"
        );
        prop_assert!(
            response["status"]["code"]
                .as_u64()
                .is_some_and(|c| c >= 400)
        );
    }
    if response.get("patch").is_some() {
        prop_assert_eq!(path, "/mutate");
        let review = built.review.as_ref().unwrap();
        let object = &review["request"]["object"];
        let old = review["request"]["oldObject"].clone();
        let result = std::panic::catch_unwind(|| patched(object, response))
            .map_err(|_| TestCaseError::fail(format!("the patch does not apply: {answer}")))?;
        // Exactly the object with its spec resolved, as the webhook promises.
        // Read as the webhook reads it: a patched object had no structural mistake.
        let read = pgpilot::manifest::read(object.clone())
            .map_err(|e| TestCaseError::fail(format!("a patched object does not read: {e}")))?;
        prop_assert!(read.errors.is_empty(), "patched despite {:?}", read.errors);
        let spec = read.cluster.spec;
        let old = from_value(old).ok().map(|o| o.spec);
        let mut expected = object.clone();
        expected["spec"] =
            serde_json::to_value(resolve(&spec, old.as_ref(), &Config::default())).unwrap();
        prop_assert_eq!(result, expected);
    }
    Ok(())
}

/// The webhook's router, called in-process.
struct Webhook {
    app: axum::Router,
    runtime: tokio::runtime::Runtime,
}

impl Webhook {
    fn new() -> Webhook {
        Webhook {
            app: pgpilot::webhook::app(Config::default(), Duration::from_secs(10)),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn send(&self, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        self.runtime.block_on(async {
            let response = self.app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, bytes.to_vec())
        })
    }
}

/// What came of a run: answers by endpoint and kind, and how often the second oracle ran.
#[derive(Default, Debug)]
struct Tally {
    verdicts: BTreeMap<String, u32>,
    /// Patched objects sent back to `/mutate` and found to be fixed points.
    fixed_points: u32,
    /// Patched objects that `/validate` admitted and that rendered.
    rendered: u32,
}

/// The second oracle, on an object `/mutate` patched: as the API server would, send it to
/// `/mutate` again (a resolved spec gets no patch) and to `/validate`; an object admitted
/// there must render.
fn check_admitted(
    webhook: &Webhook,
    review: &Value,
    object: Value,
    tally: &mut Tally,
) -> Result<(), TestCaseError> {
    let mut again = review.clone();
    again["request"]["object"] = object.clone();
    let body = serde_json::to_vec(&again).unwrap();
    let built = Built {
        body: body.clone(),
        review: Some(again),
    };
    let (status, answer) = webhook.send("/mutate", body.clone());
    check(&built, "/mutate", status, &answer)?;
    let response = &serde_json::from_slice::<Value>(&answer).unwrap()["response"];
    prop_assert_eq!(
        &response["allowed"],
        true,
        "a patched object denied on its way back: {}",
        response
    );
    prop_assert!(
        response.get("patch").is_none() || patch(response).0.is_empty(),
        "a resolved object patched again: {}",
        response
    );
    tally.fixed_points += 1;

    let (status, answer) = webhook.send("/validate", body);
    check(&built, "/validate", status, &answer)?;
    if serde_json::from_slice::<Value>(&answer).unwrap()["response"]["allowed"] == true {
        let mut cluster = from_value(object)
            .map_err(|e| TestCaseError::fail(format!("an admitted object does not read: {e}")))?;
        cluster.metadata.namespace.get_or_insert("default".into());
        let rendered = std::panic::catch_unwind(|| render(&cluster))
            .map_err(|_| TestCaseError::fail("rendering an admitted object panicked"))?;
        prop_assert!(
            rendered.is_ok(),
            "an admitted object does not render: {:?}",
            rendered.err()
        );
        tally.rendered += 1;
    }
    Ok(())
}

/// `cases` mutated reviews from `seed`, each checked by both oracles.
fn run(cases: u32, seed: u64) -> Tally {
    println!("fuzz: {cases} reviews, seed {seed} (FUZZ_SEED={seed} replays this run)");
    let samples: Vec<Value> = samples().into_iter().map(|(_, v)| v).collect();
    let webhook = Webhook::new();

    // Fixed extremes first: oversized and absurdly nested bodies.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let big = vec![b' '; 4 << 20];
    for (name, body, expected) in [
        ("deep nesting", deep.into_bytes(), StatusCode::BAD_REQUEST),
        ("4 MiB", big, StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        for path in ["/mutate", "/validate"] {
            assert_eq!(
                webhook.send(path, body.clone()).0,
                expected,
                "{path} {name}"
            );
        }
    }

    let started = Instant::now();
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig {
            cases,
            failure_persistence: None,
            max_shrink_iters: 2_000,
            ..RunnerConfig::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &key),
    );
    let tally = RefCell::new(Tally::default());
    let result = runner.run(&case(), |case| {
        let built = build(&case, &samples);
        let path = if case.validate {
            "/validate"
        } else {
            "/mutate"
        };
        let (status, answer) = webhook.send(path, built.body.clone());
        let parsed = serde_json::from_slice::<Value>(&answer).ok();
        let verdict = match &parsed {
            Some(v) if v["response"]["patch"].is_string() => "patched",
            Some(v) if v["response"]["allowed"] == true => "allowed",
            Some(_) if status == StatusCode::OK => "denied",
            _ => status.as_str(),
        };
        *tally
            .borrow_mut()
            .verdicts
            .entry(format!("{path} {verdict}"))
            .or_default() += 1;
        check(&built, path, status, &answer)?;
        if verdict == "patched" {
            let review = built.review.as_ref().unwrap();
            let object = patched(&review["request"]["object"], &parsed.unwrap()["response"]);
            check_admitted(&webhook, review, object, &mut tally.borrow_mut())?;
        }
        Ok(())
    });
    let tally = tally.into_inner();
    println!(
        "fuzz: {cases} reviews in {:?}: {tally:#?}",
        started.elapsed()
    );
    // Straight to the standard error, past the test harness's capture: `make test` shows
    // how many cases ran, from which seed, and what came of them.
    let kinds: Vec<String> = tally
        .verdicts
        .iter()
        .map(|(kind, n)| format!("{kind}: {n}"))
        .collect();
    let _ = writeln!(
        std::io::stderr(),
        "fuzz: {cases} reviews from seed {seed} in {:.1?}: {}; {} patched objects were fixed points, {} admitted ones rendered",
        started.elapsed(),
        kinds.join(", "),
        tally.fixed_points,
        tally.rendered
    );
    if let Err(e) = result {
        panic!("seed {seed}: {e}");
    }
    tally
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn a_seeded_run_gets_every_kind_of_answer_and_each_well_formed() {
    let tally = run(
        env_or("FUZZ_CASES", BOUNDED_CASES),
        env_or("FUZZ_SEED", BOUNDED_SEED),
    );
    for kind in [
        "/mutate patched",
        "/mutate allowed",
        "/mutate denied",
        "/mutate 400",
        "/validate allowed",
        "/validate denied",
        "/validate 400",
    ] {
        assert!(
            tally.verdicts.get(kind).is_some_and(|&n| n > 0),
            "no {kind:?} answer in the run: {tally:#?}"
        );
    }
    assert!(
        tally.fixed_points > 0 && tally.rendered > 0,
        "the second oracle never ran: {tally:#?}"
    );
}

#[test]
#[ignore = "long: run with `make fuzz`"]
fn randomized_reviews_always_get_a_well_formed_answer() {
    run(
        env_or("FUZZ_CASES", LONG_CASES),
        env_or("FUZZ_SEED", rand::random()),
    );
}
