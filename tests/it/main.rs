//! ffd's integration tests, in one binary: every file under `tests/` is a binary of its own
//! that links the whole crate, so one module per behaviour a user notices lives here instead.
//! Helpers (a real service on a free port, the committed MNIST subset, the `deploy/` readers,
//! the external programs some tests need) are in [`support`].
//!
//! Run one behaviour with `cargo test --test it <module>::`, e.g. `cargo test --test it
//! durability_files::`.

mod support;

mod access_control;
mod backpressure;
mod calibration;
mod checkpoint_resume;
mod client_token;
mod crash_recovery;
mod delayed_labels;
mod deploy_dashboard;
mod deploy_manifests;
mod deploy_prometheus;
mod deploy_prometheus_live;
mod determinism;
mod docker_cluster;
mod docker_compose;
mod docker_image;
mod drift_detection;
mod durability_files;
mod engine_learns;
mod graceful_shutdown;
mod hostile_input;
mod http_errors;
mod idx_errors;
mod learn_then_classify;
mod metrics_format;
mod model_file;
mod nats_backend;
mod nats_failover;
mod ndjson_stream;
mod no_alloc;
mod openapi_conformance;
mod openapi_routes;
mod replay_client;
mod request_fuzz;
mod serve_cli;
mod serve_model_file;
mod serve_tokens;
mod sleep_cycles;
mod slow_clients;
mod status_page;
mod v2_protocol;
