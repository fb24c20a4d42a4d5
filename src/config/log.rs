//! Logs, the access log and OpenTelemetry export.

use std::{str::FromStr, time::Duration};

use super::{
    env::AppEnv,
    vars::{ConfigError, Vars},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("expected `json` or `pretty`, got {other:?}")),
        }
    }
}

/// Which requests get an access-log line (a JSON line per request is a real
/// share of the cost under load, and hundreds of MB an hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    /// Every request (probes at debug).
    All,
    /// Only responses with status 500 or above.
    Errors,
    Off,
}

impl FromStr for AccessLog {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self::All),
            "errors" => Ok(Self::Errors),
            "off" => Ok(Self::Off),
            other => Err(format!("expected `all`, `errors` or `off`, got {other:?}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
    pub access: AccessLog,
    /// Where spans go over OTLP (none: nothing is exported; requests still
    /// carry a trace id in their logs and pass `traceparent` on).
    pub otlp: Option<OtlpConfig>,
}

/// OpenTelemetry export, from the standard `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full traces URL (`…/v1/traces`).
    pub traces_endpoint: String,
    pub service_name: String,
    pub timeout: Duration,
}

pub(super) fn parse(v: &mut Vars<'_>, env: AppEnv) -> Result<LogConfig, ConfigError> {
    let default_format = match env {
        AppEnv::Development => LogFormat::Pretty,
        AppEnv::Production => LogFormat::Json,
    };
    Ok(LogConfig {
        format: v.parse_or("LOG_FORMAT", default_format)?,
        filter: log_filter(&v.string_or("RUST_LOG", "info")),
        access: v.parse_or(
            "ACCESS_LOG",
            match env {
                AppEnv::Development => AccessLog::All,
                AppEnv::Production => AccessLog::Errors,
            },
        )?,
        otlp: otlp(v)?,
    })
}

/// The OpenBao client libraries log each failed request again at ERROR
/// without context, and their debug output carries request bodies (tokens,
/// secrets): they stay off whatever `RUST_LOG` says, appended last so that
/// no earlier directive can turn them back on.
pub const SILENCED_TARGETS: &[&str] = &["rustify", "vaultrs"];

pub fn log_filter(requested: &str) -> String {
    let mut filter = requested.trim().trim_end_matches(',').to_string();
    for target in SILENCED_TARGETS {
        filter.push_str(&format!(",{target}=off"));
    }
    filter.trim_start_matches(',').to_string()
}

/// OTLP export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full
/// URL) or `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, `/v1/traces` added, as
/// the specification says) is set, unless `OTEL_SDK_DISABLED=true`. Only
/// `http/protobuf` is built in: another `OTEL_EXPORTER_OTLP_PROTOCOL` is
/// refused rather than silently ignored.
fn otlp(v: &mut Vars<'_>) -> Result<Option<OtlpConfig>, ConfigError> {
    let disabled = v.bool_or("OTEL_SDK_DISABLED", false)?;
    let traces = v.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let base = v.get("OTEL_EXPORTER_OTLP_ENDPOINT");
    let protocol = v.string_or("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    let service_name = v.string_or("OTEL_SERVICE_NAME", "precinct");
    let timeout = v.duration_or("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")?;
    let (name, endpoint) = match (traces, base) {
        _ if disabled => return Ok(None),
        (Some(full), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", full),
        (None, Some(base)) => (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("{}/v1/traces", base.trim_end_matches('/')),
        ),
        (None, None) => return Ok(None),
    };
    if protocol != "http/protobuf" {
        return Err(ConfigError::new(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            format!("{protocol:?} is not supported; precinct exports http/protobuf"),
        ));
    }
    let url = url::Url::parse(&endpoint)
        .map_err(|e| ConfigError::new(name, format!("not a URL ({e}): {endpoint:?}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(name, "must be an http:// or https:// URL"));
    }
    Ok(Some(OtlpConfig {
        traces_endpoint: endpoint,
        service_name,
        timeout,
    }))
}
