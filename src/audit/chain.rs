//! The hash chain, checked: the canonical encoding of a row (the same as
//! `audit_row_hash` in sql/migrations/20261201000002_assume_breach.sql) and
//! a verifier that walks rows in `seq` order and names the first one that
//! was deleted, altered or inserted. Pure: [`super::verify`] feeds it.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt,
};

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The genesis row's previous hash.
pub const GENESIS_PREV: [u8; 32] = [0; 32];
pub const GENESIS_EVENT: &str = "audit_genesis";
pub const CHECKPOINT_EVENT: &str = "audit_checkpoint";
/// How far back a checkpoint may point (it is written milliseconds after
/// the row it covers, so a few rows at most in practice).
const RECENT: usize = 65_536;

/// A row's hashed fields as PostgreSQL renders them to text, in order:
/// occurred_at (epoch µs), event, outcome, user_id, client_ip, user_agent,
/// request_id, detail (jsonb's text form, which is normalised).
pub type Fields = [Option<String>; 8];

#[derive(Debug, Clone)]
pub struct Row {
    pub seq: i64,
    pub prev_hash: Vec<u8>,
    pub row_hash: Vec<u8>,
    pub fields: Fields,
}

impl Row {
    fn event(&self) -> &str {
        self.fields[1].as_deref().unwrap_or_default()
    }

    fn detail(&self) -> &str {
        self.fields[7].as_deref().unwrap_or_default()
    }
}

/// 'precinct-audit-v1', then per field '|' and '-' for NULL or
/// '<octet length>:<text>': length-prefixed, so no two rows encode alike.
pub fn canonical(seq: i64, fields: &Fields) -> Vec<u8> {
    let mut out = b"precinct-audit-v1".to_vec();
    let seq = seq.to_string();
    for field in std::iter::once(Some(seq.as_str())).chain(fields.iter().map(|f| f.as_deref())) {
        out.push(b'|');
        match field {
            None => out.push(b'-'),
            Some(v) => {
                out.extend_from_slice(v.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(v.as_bytes());
            }
        }
    }
    out
}

pub fn row_hash(prev: &[u8], seq: i64, fields: &Fields) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical(seq, fields));
    h.finalize().into()
}

/// What a checkpoint signs: the chain's head at `covers_seq`.
pub fn checkpoint_message(covers_seq: i64, head_hex: &str) -> String {
    format!("precinct-audit-checkpoint-v1\n{covers_seq}\n{head_hex}")
}

/// A signed checkpoint, as its audit row's `detail` and the KV copy hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub covers_seq: i64,
    /// Hex of the row hash at `covers_seq`.
    pub head: String,
    pub key: String,
    pub key_version: u64,
    /// ES256, base64url r || s (Transit's JWS marshaling).
    pub signature: String,
}

/// The public keys of the audit key, by version (Transit's).
pub struct Keys {
    pub name: String,
    pub versions: BTreeMap<u64, DecodingKey>,
}

impl Keys {
    /// True when `cp` was signed by a version of this key.
    pub fn verifies(&self, cp: &Checkpoint) -> bool {
        if cp.key != self.name {
            return false;
        }
        let Some(key) = self.versions.get(&cp.key_version) else {
            return false;
        };
        let message = checkpoint_message(cp.covers_seq, &cp.head);
        jsonwebtoken::crypto::verify(&cp.signature, message.as_bytes(), key, Algorithm::ES256)
            .unwrap_or(false)
    }
}

/// The first thing wrong with a trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No rows at all: the genesis row is gone with the rest.
    Empty,
    GenesisMissing {
        first_seq: i64,
    },
    Deleted {
        after: i64,
        next: i64,
    },
    Altered {
        seq: i64,
    },
    Relinked {
        seq: i64,
    },
    BadCheckpoint {
        seq: i64,
        reason: String,
    },
    ForgedSignature {
        seq: i64,
    },
    Rewritten {
        checkpoint_seq: i64,
        covers_seq: i64,
    },
    /// The copy outside the database signs rows the table does not have.
    Truncated {
        last_seq: i64,
        signed_seq: i64,
    },
    /// The copy outside the database disagrees with the table.
    NotTheSignedChain {
        covers_seq: i64,
    },
    ExternalForged,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => write!(
                f,
                "the audit log is empty: its genesis row is gone (truncated)"
            ),
            Problem::GenesisMissing { first_seq } => write!(
                f,
                "the chain starts at seq {first_seq}, not at its genesis row 0: rows 0..{first_seq} were deleted"
            ),
            Problem::Deleted { after, next } => write!(
                f,
                "rows deleted: seq {after} is followed by seq {next} (missing {}..={})",
                after + 1,
                next - 1
            ),
            Problem::Altered { seq } => write!(
                f,
                "row seq {seq} was altered, or inserted with a forged hash: its hash does not match its contents"
            ),
            Problem::Relinked { seq } => write!(
                f,
                "row seq {seq} does not chain to the row before it: rows were inserted or removed before it"
            ),
            Problem::BadCheckpoint { seq, reason } => {
                write!(f, "checkpoint row seq {seq} is malformed: {reason}")
            }
            Problem::ForgedSignature { seq } => write!(
                f,
                "checkpoint row seq {seq}: its signature does not verify with any version of the audit key"
            ),
            Problem::Rewritten {
                checkpoint_seq,
                covers_seq,
            } => write!(
                f,
                "rows up to seq {covers_seq} were rewritten and re-chained after checkpoint seq {checkpoint_seq} signed them"
            ),
            Problem::Truncated {
                last_seq,
                signed_seq,
            } => write!(
                f,
                "the table ends at seq {last_seq} but the checkpoint kept in OpenBao signs seq {signed_seq}: rows were deleted from the end, or the table was restored from an older backup"
            ),
            Problem::NotTheSignedChain { covers_seq } => write!(
                f,
                "the checkpoint kept in OpenBao signs a different row at seq {covers_seq}: the chain was rewritten or restored from another history"
            ),
            Problem::ExternalForged => write!(
                f,
                "the checkpoint kept in OpenBao does not verify with the audit key"
            ),
        }
    }
}

/// A trail that checks out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub rows: u64,
    pub checkpoints: u64,
    pub last_seq: i64,
    /// The last row a checkpoint signs; rows after it are chained but not
    /// yet signed (a superuser could rewrite those undetected).
    pub signed_through: Option<i64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ok: {} rows, {} checkpoints",
            self.rows, self.checkpoints
        )?;
        match self.signed_through {
            Some(s) => write!(
                f,
                " (signed through seq {s}; {} rows after it chained, not yet signed)",
                self.last_seq - s
            ),
            None => write!(f, " (no checkpoint yet: every row is chained, none signed)"),
        }
    }
}

/// Walks rows in `seq` order; stops at the first problem.
pub struct Verifier<'k> {
    keys: &'k Keys,
    last: Option<(i64, Vec<u8>)>,
    recent: VecDeque<(i64, Vec<u8>)>,
    /// covers_seq → head, of every checkpoint row seen.
    signed: BTreeMap<i64, String>,
    rows: u64,
    checkpoints: u64,
}

impl<'k> Verifier<'k> {
    pub fn new(keys: &'k Keys) -> Self {
        Self {
            keys,
            last: None,
            recent: VecDeque::new(),
            signed: BTreeMap::new(),
            rows: 0,
            checkpoints: 0,
        }
    }

    pub fn push(&mut self, row: &Row) -> Result<(), Problem> {
        let expected_prev: &[u8] = match &self.last {
            None if row.seq != 0 || row.event() != GENESIS_EVENT => {
                return Err(Problem::GenesisMissing { first_seq: row.seq });
            }
            None => &GENESIS_PREV,
            Some((seq, _)) if row.seq != seq + 1 => {
                return Err(Problem::Deleted {
                    after: *seq,
                    next: row.seq,
                });
            }
            Some((_, hash)) => hash,
        };
        if row_hash(&row.prev_hash, row.seq, &row.fields).as_slice() != row.row_hash {
            return Err(Problem::Altered { seq: row.seq });
        }
        if row.prev_hash != expected_prev {
            return Err(Problem::Relinked { seq: row.seq });
        }
        if row.event() == CHECKPOINT_EVENT {
            self.checkpoint(row)?;
        }
        self.rows += 1;
        self.last = Some((row.seq, row.row_hash.clone()));
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((row.seq, row.row_hash.clone()));
        Ok(())
    }

    fn checkpoint(&mut self, row: &Row) -> Result<(), Problem> {
        let bad = |reason: &str| Problem::BadCheckpoint {
            seq: row.seq,
            reason: reason.to_string(),
        };
        let cp: Checkpoint = serde_json::from_str(row.detail()).map_err(|e| bad(&e.to_string()))?;
        if cp.covers_seq >= row.seq {
            return Err(bad("it covers a row after itself"));
        }
        if !self.keys.verifies(&cp) {
            return Err(Problem::ForgedSignature { seq: row.seq });
        }
        let covered = self
            .hash_at(cp.covers_seq)
            .ok_or_else(|| bad("it covers a row too far before it to check"))?;
        if hex(covered) != cp.head {
            return Err(Problem::Rewritten {
                checkpoint_seq: row.seq,
                covers_seq: cp.covers_seq,
            });
        }
        self.signed.insert(cp.covers_seq, cp.head);
        self.checkpoints += 1;
        Ok(())
    }

    fn hash_at(&self, seq: i64) -> Option<&[u8]> {
        let first = self.recent.front()?.0;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.recent
            .get(i)
            .filter(|(s, _)| *s == seq)
            .map(|(_, h)| h.as_slice())
    }

    /// The verdict, given the latest checkpoint kept outside the database
    /// (OpenBao KV), if any.
    pub fn finish(self, external: Option<&Checkpoint>) -> Result<Report, Problem> {
        let Some((last_seq, _)) = self.last else {
            return Err(Problem::Empty);
        };
        if let Some(cp) = external {
            if !self.keys.verifies(cp) {
                return Err(Problem::ExternalForged);
            }
            if cp.covers_seq > last_seq {
                return Err(Problem::Truncated {
                    last_seq,
                    signed_seq: cp.covers_seq,
                });
            }
            let in_table = self
                .signed
                .get(&cp.covers_seq)
                .cloned()
                .or_else(|| self.hash_at(cp.covers_seq).map(hex));
            if in_table.as_deref() != Some(cp.head.as_str()) {
                return Err(Problem::NotTheSignedChain {
                    covers_seq: cp.covers_seq,
                });
            }
        }
        Ok(Report {
            rows: self.rows,
            checkpoints: self.checkpoints,
            last_seq,
            signed_through: self.signed.keys().next_back().copied(),
        })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::EncodingKey;

    use super::*;

    use crate::bao::transit::test_keys::{self, OTHER_PRIVATE, PRIVATE};

    fn keys() -> Keys {
        let (x, y) = test_keys::point();
        Keys {
            name: "precinct-audit".into(),
            versions: [(1, DecodingKey::from_ec_components(&x, &y).unwrap())].into(),
        }
    }

    fn sign(private: &str, covers_seq: i64, head: &str) -> Checkpoint {
        let key = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
        let message = checkpoint_message(covers_seq, head);
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::ES256).unwrap();
        Checkpoint {
            covers_seq,
            head: head.to_string(),
            key: "precinct-audit".into(),
            key_version: 1,
            signature,
        }
    }

    fn fields(event: &str, detail: &str) -> Fields {
        [
            Some("1796127934988912".into()),
            Some(event.into()),
            Some("success".into()),
            None,
            Some("10.0.0.7/32".into()),
            Some("curl/8".into()),
            None,
            Some(detail.into()),
        ]
    }

    /// A chain as the trigger writes it: genesis, then `events`, with a
    /// signed checkpoint after each "CHECKPOINT".
    fn chain(events: &[&str]) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        let push = |rows: &mut Vec<Row>, f: Fields| {
            let seq = rows.len() as i64;
            let prev = rows
                .last()
                .map(|r| r.row_hash.clone())
                .unwrap_or(GENESIS_PREV.to_vec());
            let row_hash = row_hash(&prev, seq, &f).to_vec();
            rows.push(Row {
                seq,
                prev_hash: prev,
                row_hash,
                fields: f,
            });
        };
        push(&mut rows, fields(GENESIS_EVENT, "{}"));
        for e in events {
            if *e == "CHECKPOINT" {
                let last = rows.last().unwrap();
                let cp = sign(PRIVATE, last.seq, &hex(&last.row_hash));
                push(
                    &mut rows,
                    fields(CHECKPOINT_EVENT, &serde_json::to_string(&cp).unwrap()),
                );
            } else {
                push(&mut rows, fields(e, r#"{"reason": "bad_password"}"#));
            }
        }
        rows
    }

    fn verify(rows: &[Row], external: Option<&Checkpoint>) -> Result<Report, Problem> {
        let keys = keys();
        let mut v = Verifier::new(&keys);
        for r in rows {
            v.push(r)?;
        }
        v.finish(external)
    }

    fn latest_checkpoint(rows: &[Row]) -> Checkpoint {
        let row = rows
            .iter()
            .rev()
            .find(|r| r.event() == CHECKPOINT_EVENT)
            .unwrap();
        serde_json::from_str(row.detail()).unwrap()
    }

    /// Recomputes every hash from `from` on, as a superuser with the
    /// triggers disabled could.
    fn rechain(rows: &mut [Row], from: usize) {
        for i in from..rows.len() {
            let prev = if i == 0 {
                GENESIS_PREV.to_vec()
            } else {
                rows[i - 1].row_hash.clone()
            };
            rows[i].prev_hash = prev.clone();
            rows[i].row_hash = row_hash(&prev, rows[i].seq, &rows[i].fields).to_vec();
        }
    }

    #[test]
    fn the_encoding_is_length_prefixed_and_marks_null() {
        let f: Fields = [
            Some("1".into()),
            Some("a|b".into()),
            Some("".into()),
            None,
            None,
            None,
            None,
            Some("{}".into()),
        ];
        assert_eq!(
            String::from_utf8(canonical(7, &f)).unwrap(),
            "precinct-audit-v1|1:7|1:1|3:a|b|0:|-|-|-|-|2:{}"
        );
        // "é" is two octets, as PostgreSQL's octet_length counts.
        let mut g = f.clone();
        g[1] = Some("é".into());
        assert!(
            String::from_utf8(canonical(7, &g))
                .unwrap()
                .contains("|2:é|")
        );
    }

    #[test]
    fn an_intact_chain_reports_its_rows_and_checkpoints() {
        let rows = chain(&["login", "logout", "CHECKPOINT", "login"]);
        let report = verify(&rows, Some(&latest_checkpoint(&rows))).unwrap();
        assert_eq!(
            report,
            Report {
                rows: 5,
                checkpoints: 1,
                last_seq: 4,
                signed_through: Some(2)
            }
        );
        assert_eq!(
            report.to_string(),
            "ok: 5 rows, 1 checkpoints (signed through seq 2; 2 rows after it chained, not yet signed)"
        );
    }

    #[test]
    fn each_tampering_is_named_by_the_first_row_it_touched() {
        let intact = chain(&["login", "refresh", "logout", "CHECKPOINT", "login", "login"]);
        let external = latest_checkpoint(&intact);
        type Tamper = fn(&mut Vec<Row>);
        let cases: &[(&str, Tamper, Problem)] = &[
            (
                "a row deleted in the middle",
                |r| {
                    r.remove(2);
                },
                Problem::Deleted { after: 1, next: 3 },
            ),
            (
                "a row's detail edited",
                |r| r[2].fields[7] = Some(r#"{"reason": "none"}"#.into()),
                Problem::Altered { seq: 2 },
            ),
            (
                "a row inserted with a forged hash",
                |r| {
                    let mut forged = r[5].clone();
                    forged.seq = 7;
                    forged.row_hash = vec![0xab; 32];
                    r.push(forged);
                },
                Problem::Altered { seq: 7 },
            ),
            (
                "a row inserted in the middle, later rows renumbered, hashes kept",
                |r| {
                    let mut inserted = r[1].clone();
                    inserted.fields[2] = Some("failure".into());
                    r.insert(2, inserted);
                    for (i, row) in r.iter_mut().enumerate() {
                        row.seq = i as i64;
                    }
                    let prev = r[1].row_hash.clone();
                    r[2].prev_hash = prev.clone();
                    r[2].row_hash = row_hash(&prev, 2, &r[2].fields).to_vec();
                },
                Problem::Altered { seq: 3 },
            ),
            (
                "a row's detail edited and the whole chain recomputed",
                |r| {
                    r[2].fields[7] = Some(r#"{"reason": "none"}"#.into());
                    rechain(r, 2);
                },
                Problem::Rewritten {
                    checkpoint_seq: 4,
                    covers_seq: 3,
                },
            ),
            (
                "a checkpoint signed by another key",
                |r| {
                    let cp = sign(OTHER_PRIVATE, 3, &hex(&r[3].row_hash));
                    r[4].fields[7] = Some(serde_json::to_string(&cp).unwrap());
                    rechain(r, 4);
                },
                Problem::ForgedSignature { seq: 4 },
            ),
            (
                "a checkpoint whose detail is not a checkpoint",
                |r| {
                    r[4].fields[7] = Some("{}".into());
                    rechain(r, 4);
                },
                Problem::BadCheckpoint {
                    seq: 4,
                    reason: "missing field `covers_seq` at line 1 column 2".into(),
                },
            ),
            ("a truncated table", |r| r.clear(), Problem::Empty),
            (
                "the genesis row deleted",
                |r| {
                    r.remove(0);
                },
                Problem::GenesisMissing { first_seq: 1 },
            ),
            (
                "rows deleted from the end, past the signed checkpoint",
                |r| r.truncate(3),
                Problem::Truncated {
                    last_seq: 2,
                    signed_seq: 3,
                },
            ),
            (
                "the checkpoints deleted and everything re-chained",
                |r| {
                    r.remove(4);
                    for (i, row) in r.iter_mut().enumerate() {
                        row.seq = i as i64;
                    }
                    r[1].fields[2] = Some("failure".into());
                    rechain(r, 0);
                },
                Problem::NotTheSignedChain { covers_seq: 3 },
            ),
        ];
        assert_eq!(verify(&intact, Some(&external)).map(|r| r.rows), Ok(7));
        for (what, tamper, expected) in cases {
            let mut rows = intact.clone();
            tamper(&mut rows);
            assert_eq!(
                verify(&rows, Some(&external)).as_ref(),
                Err(expected),
                "{what}"
            );
        }
    }

    #[test]
    fn a_table_restored_from_an_older_backup_is_behind_the_copy_in_openbao() {
        let older = chain(&["login", "CHECKPOINT"]);
        let newer = chain(&["login", "CHECKPOINT", "logout", "login", "CHECKPOINT"]);
        assert_eq!(
            verify(&older, Some(&latest_checkpoint(&newer))),
            Err(Problem::Truncated {
                last_seq: 2,
                signed_seq: 4
            })
        );
        // The copy itself must be genuine.
        let mut forged = latest_checkpoint(&older);
        forged.signature = sign(OTHER_PRIVATE, 1, &forged.head).signature;
        assert_eq!(verify(&older, Some(&forged)), Err(Problem::ExternalForged));
    }

    #[test]
    fn rows_after_the_last_checkpoint_are_reported_unsigned() {
        let rows = chain(&["login"]);
        let report = verify(&rows, None).unwrap();
        assert_eq!(report.signed_through, None);
        assert!(report.to_string().contains("none signed"), "{report}");
    }
}
