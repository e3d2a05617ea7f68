//! Toxics: what a fault does, to which direction, and how often — spelt as Toxiproxy spells them,
//! so a Toxiproxy client's JSON (`{"name":"lat","type":"latency","stream":"downstream",
//! "toxicity":1.0,"attributes":{"latency":100,"jitter":10}}`) parses unchanged.
//!
//! Rust field names carry their units (`latency_ms`); the serde names are Toxiproxy's
//! (`latency`). Missing fields take Toxiproxy's defaults: `name` = `{type}_{stream}`, `stream` =
//! downstream, `toxicity` = 1, every attribute 0.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The longest delay any attribute may ask for (24 h): bounds keep every instant the proxy
/// computes far from overflow, and nobody means a longer one.
pub const MAX_DELAY_MS: u64 = 24 * 60 * 60 * 1000;
/// The largest slicer size or variation (1 GiB), for the same reason.
pub const MAX_SLICE_BYTES: u64 = 1 << 30;

/// A direction through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Client → upstream server.
    Upstream,
    /// Upstream server → client (Toxiproxy's default).
    #[default]
    Downstream,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Stream {
    /// Case-insensitive, as Toxiproxy's parser is.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "upstream" => Ok(Stream::Upstream),
            "downstream" => Ok(Stream::Downstream),
            _ => Err(serde::de::Error::custom(format!(
                "unknown stream `{s}`, expected `upstream` or `downstream`"
            ))),
        }
    }
}

/// What a toxic does. Serialized as Toxiproxy's `type` + `attributes`.
///
/// "Chunk" below means one read from the source socket (at most 32 KiB): TCP has no message
/// boundaries, so per-chunk draws are replayed exactly only when the chunks are — which holds for
/// request/response traffic that waits for each answer, not for a stream the kernel may coalesce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "attributes", rename_all = "snake_case")]
pub enum ToxicKind {
    /// Every chunk is delivered `latency ± jitter` ms after it arrived at the proxy (one uniform
    /// draw per chunk in `[-jitter, +jitter]`, floored at 0; chunks keep their order).
    Latency {
        #[serde(rename = "latency", default)]
        latency_ms: u64,
        #[serde(rename = "jitter", default)]
        jitter_ms: u64,
    },
    /// At most `rate` KB/s (1 KB = 1000 bytes), sent in pieces of at most 100 ms' worth.
    /// 0 means unlimited, as in Toxiproxy.
    Bandwidth {
        #[serde(rename = "rate", default)]
        rate_kb_per_s: u64,
    },
    /// When the source closes, the close is passed on `delay` ms later (data is not delayed).
    SlowClose {
        #[serde(rename = "delay", default)]
        delay_ms: u64,
    },
    /// No data passes (it is dropped, as Toxiproxy does), and `timeout` ms after the toxic began
    /// to apply the whole connection is closed. 0: never closed — held open, passing nothing,
    /// until the toxic is removed (data sent meanwhile is lost; a close is passed on afterwards).
    Timeout {
        #[serde(rename = "timeout", default)]
        timeout_ms: u64,
    },
    /// `timeout` ms after the toxic began to apply, both sockets are reset (TCP RST, `SO_LINGER`
    /// 0): the peers see "connection reset by peer". 0: at once.
    ResetPeer {
        #[serde(rename = "timeout", default)]
        timeout_ms: u64,
    },
    /// Each chunk is split into slices of `average_size ± size_variation` bytes (uniform, at
    /// least 1), with `delay` µs between consecutive slices.
    Slicer {
        #[serde(default)]
        average_size: u64,
        #[serde(default)]
        size_variation: u64,
        #[serde(rename = "delay", default)]
        delay_us: u64,
    },
    /// After `bytes` bytes have passed (counted from when the toxic began to apply) the whole
    /// connection is closed; the chunk that crosses the limit is cut at it.
    LimitData {
        #[serde(default)]
        bytes: u64,
    },
    /// Ours, not Toxiproxy's. Each chunk is lost with probability `probability` (one draw per
    /// chunk). TCP cannot lose bytes in the middle of a stream and carry on — so, as in turmoil
    /// when a connection crosses a partition, the first lost chunk **stalls the direction for
    /// good**: that chunk and every later one are withheld, the close is never passed on, the
    /// connection stays open, and the sender is pushed back once the buffers fill. Removing the
    /// toxic does not revive a stalled connection; only the application's own timeouts or
    /// heartbeats notice it — which is the point.
    Loss {
        #[serde(default)]
        probability: f64,
    },
}

impl ToxicKind {
    /// Toxiproxy's `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::LimitData { .. } => "limit_data",
            ToxicKind::Loss { .. } => "loss",
        }
    }

    /// The `attributes` object, as Toxiproxy shows it.
    pub fn attributes(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut m)) => m.remove("attributes").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    fn from_parts(type_name: &str, attributes: Value) -> Result<Self, String> {
        let attributes = match attributes {
            Value::Null => Value::Object(Map::new()),
            v @ Value::Object(_) => v,
            _ => return Err("`attributes` must be an object".into()),
        };
        let mut m = Map::new();
        m.insert("type".into(), Value::String(type_name.into()));
        m.insert("attributes".into(), attributes);
        serde_json::from_value(Value::Object(m)).map_err(|e| format!("toxic `{type_name}`: {e}"))
    }
}

/// One fault on one proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawToxic", into = "RawToxic")]
pub struct Toxic {
    /// Unique per proxy. It also names the toxic's random stream on every connection, so
    /// draws do not depend on which other toxics exist or in what order they drew.
    pub name: String,
    pub kind: ToxicKind,
    pub stream: Stream,
    /// Probability (0–1), drawn once per connection, that the toxic applies to that connection.
    pub toxicity: f64,
}

impl Toxic {
    /// A toxic named `{type}_{stream}` that always applies.
    pub fn new(kind: ToxicKind, stream: Stream) -> Self {
        Self {
            name: format!("{}_{}", kind.type_name(), stream),
            kind,
            stream,
            toxicity: 1.0,
        }
    }

    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn with_toxicity(mut self, toxicity: f64) -> Self {
        self.toxicity = toxicity;
        self
    }

    /// The checks every toxic passes before a proxy takes it.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > 200 {
            return Err("toxic name must be 1 to 200 bytes".into());
        }
        if !(0.0..=1.0).contains(&self.toxicity) {
            return Err(format!(
                "toxicity must be within 0..=1, got {}",
                self.toxicity
            ));
        }
        let delay = |what: &str, ms: u64| {
            if ms > MAX_DELAY_MS {
                Err(format!("{what} must be at most {MAX_DELAY_MS} ms"))
            } else {
                Ok(())
            }
        };
        match self.kind {
            ToxicKind::Latency {
                latency_ms,
                jitter_ms,
            } => {
                delay("latency", latency_ms)?;
                delay("jitter", jitter_ms)
            }
            ToxicKind::Bandwidth { .. } | ToxicKind::LimitData { .. } => Ok(()),
            ToxicKind::SlowClose { delay_ms } => delay("delay", delay_ms),
            ToxicKind::Timeout { timeout_ms } | ToxicKind::ResetPeer { timeout_ms } => {
                delay("timeout", timeout_ms)
            }
            ToxicKind::Slicer {
                average_size,
                size_variation,
                delay_us,
            } => {
                if average_size > MAX_SLICE_BYTES || size_variation > MAX_SLICE_BYTES {
                    return Err(format!(
                        "slicer sizes must be at most {MAX_SLICE_BYTES} bytes"
                    ));
                }
                delay("delay", delay_us / 1000)
            }
            ToxicKind::Loss { probability } => {
                if (0.0..=1.0).contains(&probability) {
                    Ok(())
                } else {
                    Err(format!(
                        "probability must be within 0..=1, got {probability}"
                    ))
                }
            }
        }
    }

    /// This toxic with Toxiproxy's update applied: `toxicity` and the keys of `attributes` are
    /// taken from `body`; name, type and stream never change.
    pub fn updated(&self, body: &Value) -> Result<Toxic, String> {
        let Value::Object(body) = body else {
            return Err("a toxic update must be a JSON object".into());
        };
        let mut next = self.clone();
        if let Some(t) = body.get("toxicity") {
            next.toxicity = t
                .as_f64()
                .ok_or_else(|| "`toxicity` must be a number".to_string())?;
        }
        match body.get("attributes") {
            None | Some(Value::Null) => {}
            Some(Value::Object(changes)) => {
                let mut attributes = match self.kind.attributes() {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                for (k, v) in changes {
                    attributes.insert(k.clone(), v.clone());
                }
                next.kind =
                    ToxicKind::from_parts(self.kind.type_name(), Value::Object(attributes))?;
            }
            Some(_) => return Err("`attributes` must be an object".into()),
        }
        next.validate()?;
        Ok(next)
    }
}

/// The wire form: every field optional but `type`, so Toxiproxy's defaults can be filled in.
#[derive(Serialize, Deserialize)]
struct RawToxic {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default)]
    stream: Option<Stream>,
    #[serde(default)]
    toxicity: Option<f64>,
    #[serde(default)]
    attributes: Value,
}

impl TryFrom<RawToxic> for Toxic {
    type Error = String;

    fn try_from(raw: RawToxic) -> Result<Self, String> {
        let kind = ToxicKind::from_parts(&raw.type_name, raw.attributes)?;
        let stream = raw.stream.unwrap_or_default();
        let toxic = Toxic {
            name: raw
                .name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("{}_{}", raw.type_name, stream)),
            kind,
            stream,
            toxicity: raw.toxicity.unwrap_or(1.0),
        };
        toxic.validate()?;
        Ok(toxic)
    }
}

impl From<Toxic> for RawToxic {
    fn from(t: Toxic) -> Self {
        RawToxic {
            name: Some(t.name),
            type_name: t.kind.type_name().into(),
            stream: Some(t.stream),
            toxicity: Some(t.toxicity),
            attributes: t.kind.attributes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_toxiproxy_client_body_parses_and_prints_back_the_same() {
        let body = json!({"name":"lat","type":"latency","stream":"downstream","toxicity":1.0,
                          "attributes":{"latency":100,"jitter":10}});
        let t: Toxic = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(
            t,
            Toxic::new(
                ToxicKind::Latency {
                    latency_ms: 100,
                    jitter_ms: 10
                },
                Stream::Downstream
            )
            .named("lat")
        );
        assert_eq!(serde_json::to_value(&t).unwrap(), body);
    }

    #[test]
    fn missing_fields_take_toxiproxys_defaults() {
        let t: Toxic = serde_json::from_value(json!({"type":"slicer"})).unwrap();
        assert_eq!(t.name, "slicer_downstream");
        assert_eq!(t.stream, Stream::Downstream);
        assert_eq!(t.toxicity, 1.0);
        assert_eq!(
            t.kind,
            ToxicKind::Slicer {
                average_size: 0,
                size_variation: 0,
                delay_us: 0
            }
        );
        let t: Toxic = serde_json::from_value(
            json!({"type":"reset_peer","stream":"UpStream","attributes":null}),
        )
        .unwrap();
        assert_eq!(t.name, "reset_peer_upstream");
        assert_eq!(t.kind, ToxicKind::ResetPeer { timeout_ms: 0 });
    }

    #[test]
    fn every_kind_round_trips_under_its_toxiproxy_type_name() {
        let kinds = [
            ToxicKind::Latency {
                latency_ms: 1,
                jitter_ms: 2,
            },
            ToxicKind::Bandwidth { rate_kb_per_s: 3 },
            ToxicKind::SlowClose { delay_ms: 4 },
            ToxicKind::Timeout { timeout_ms: 5 },
            ToxicKind::ResetPeer { timeout_ms: 6 },
            ToxicKind::Slicer {
                average_size: 7,
                size_variation: 8,
                delay_us: 9,
            },
            ToxicKind::LimitData { bytes: 10 },
            ToxicKind::Loss { probability: 0.25 },
        ];
        for kind in kinds {
            let t = Toxic::new(kind.clone(), Stream::Upstream);
            let v = serde_json::to_value(&t).unwrap();
            assert_eq!(v["type"], kind.type_name());
            assert_eq!(serde_json::from_value::<Toxic>(v).unwrap(), t);
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            json!({"type":"nope"}),
            json!({"name":"x"}),
            json!({"type":"latency","stream":"sideways"}),
            json!({"type":"latency","toxicity":1.5}),
            json!({"type":"latency","attributes":{"latency":-1}}),
            json!({"type":"latency","attributes":{"latency":"slow"}}),
            json!({"type":"latency","attributes":[1]}),
            json!({"type":"loss","attributes":{"probability":2}}),
            json!({"type":"timeout","attributes":{"timeout":u64::MAX}}),
            json!([]),
        ] {
            assert!(
                serde_json::from_value::<Toxic>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_update_changes_toxicity_and_named_attributes_only() {
        let t: Toxic = serde_json::from_value(
            json!({"name":"lat","type":"latency","attributes":{"latency":100,"jitter":10}}),
        )
        .unwrap();
        let u = t
            .updated(&json!({"toxicity":0.5,"attributes":{"jitter":3},"type":"timeout"}))
            .unwrap();
        assert_eq!(u.toxicity, 0.5);
        assert_eq!(
            u.kind,
            ToxicKind::Latency {
                latency_ms: 100,
                jitter_ms: 3
            }
        );
        assert_eq!(u.name, "lat");
        assert!(t.updated(&json!({"toxicity":"high"})).is_err());
        assert!(t.updated(&json!({"attributes":{"latency":-5}})).is_err());
        assert!(t.updated(&json!(3)).is_err());
    }
}
