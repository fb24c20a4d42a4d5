//! The SPIFFE Workload API over gRPC, as SPIRE's agent serves it.

use std::{collections::HashMap, pin::Pin, sync::Arc};

use futures::Stream;
use tokio_stream::{StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use super::{
    pb,
    state::{AgentState, WorkloadIdentity},
};
use pb::spiffe_workload_api_server::SpiffeWorkloadApi;

/// SPIRE rejects any request without this metadata (it proves the caller
/// meant to talk to the Workload API, not an SSRF'd proxy).
pub fn require_security_header(request: Request<()>) -> Result<Request<()>, Status> {
    match request.metadata().get("workload.spiffe.io") {
        Some(v) if v == "true" => Ok(request),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

/// The Workload API for one identity (the one of the socket it serves).
pub struct WorkloadApi {
    pub state: Arc<AgentState>,
    pub workload: Arc<WorkloadIdentity>,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl WorkloadApi {
    /// Ends a stream when the agent stops, so connections close and clients
    /// reconnect, as they would when a real agent's process exits.
    fn until_shutdown<T, S>(&self, stream: S) -> ResponseStream<T>
    where
        S: Stream<Item = Result<T, Status>> + Send + 'static,
    {
        Box::pin(futures::StreamExt::take_until(
            stream,
            self.state.cancel.clone().cancelled_owned(),
        ))
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = ResponseStream<pb::X509svidResponse>;
    type FetchX509BundlesStream = ResponseStream<pb::X509BundlesResponse>;
    type FetchJWTBundlesStream = ResponseStream<pb::JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _request: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let (state, workload) = (self.state.clone(), self.workload.clone());
        // Sends the current SVID at once, then each rotation as it happens.
        let stream = WatchStream::new(self.workload.x509.subscribe()).map(move |material| {
            Ok(pb::X509svidResponse {
                svids: vec![pb::X509svid {
                    spiffe_id: workload.spiffe_id.clone(),
                    x509_svid: material.chain_der.clone(),
                    x509_svid_key: material.key_der.clone(),
                    bundle: state.authority.bundle_der().to_vec(),
                    hint: String::new(),
                }],
                crl: vec![],
                federated_bundles: HashMap::new(),
            })
        });
        Ok(Response::new(self.until_shutdown(stream)))
    }

    async fn fetch_x509_bundles(
        &self,
        _request: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let state = self.state.clone();
        let bundles = HashMap::from([(
            format!("spiffe://{}", state.trust_domain),
            state.authority.bundle_der().to_vec(),
        )]);
        // The CA does not rotate while the agent runs: one message, then the
        // stream stays open like SPIRE's.
        let stream = tokio_stream::once(Ok(pb::X509BundlesResponse {
            crl: vec![],
            bundles,
        }))
        .chain(tokio_stream::pending());
        Ok(Response::new(self.until_shutdown(stream)))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        let request = request.into_inner();
        if request.audience.is_empty() || request.audience.iter().any(|a| a.is_empty()) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if !request.spiffe_id.is_empty() && request.spiffe_id != self.workload.spiffe_id {
            return Err(Status::permission_denied(format!(
                "no identity issued for {}",
                request.spiffe_id
            )));
        }
        let token = self
            .state
            .jwt
            .read()
            .await
            .sign(
                &self.workload.spiffe_id,
                &request.audience,
                &self.state.issuer,
                self.state.jwt_ttl,
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::JwtsvidResponse {
            svids: vec![pb::Jwtsvid {
                spiffe_id: self.workload.spiffe_id.clone(),
                svid: token,
                hint: String::new(),
            }],
        }))
    }

    async fn fetch_jwt_bundles(
        &self,
        _request: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let td = format!("spiffe://{}", self.state.trust_domain);
        let stream = WatchStream::new(self.state.jwks.subscribe()).map(move |jwks| {
            Ok(pb::JwtBundlesResponse {
                bundles: HashMap::from([(td.clone(), jwks.as_ref().clone())]),
            })
        });
        Ok(Response::new(self.until_shutdown(stream)))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        let request = request.into_inner();
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if request.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let claims = self
            .state
            .jwt
            .read()
            .await
            .validate(&request.svid, &request.audience)
            .map_err(Status::invalid_argument)?;
        let spiffe_id = claims["sub"].as_str().unwrap_or_default().to_string();
        Ok(Response::new(pb::ValidateJwtsvidResponse {
            spiffe_id,
            claims: Some(to_struct(claims)),
        }))
    }
}

fn to_struct(value: serde_json::Value) -> prost_types::Struct {
    let fields = match value {
        serde_json::Value::Object(map) => map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
        _ => Default::default(),
    };
    prost_types::Struct { fields }
}

fn to_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        obj @ serde_json::Value::Object(_) => Kind::StructValue(to_struct(obj)),
    };
    prost_types::Value { kind: Some(kind) }
}
