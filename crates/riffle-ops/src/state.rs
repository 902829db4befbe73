//! `GET /state/{key}` on every process of an app: answered from this
//! process when it owns the key's partition, else relayed to the owner.
//! The runtime finds the owner ([`StateQueries`]); this is the HTTP side.

use serde::Serialize;

use super::http::{self, Client, Response};
use riffle_runtime::process::{StateQueries, STATE_QUERY_WAIT as REMOTE_WAIT};

/// The answer to a query, as served on every process.
#[derive(Serialize)]
struct Answer<'a> {
    key: &'a str,
    partition: i32,
    /// The endpoint of the process that owns the key.
    owner: &'a str,
    state: Option<serde_json::Value>,
}

/// The HTTP answer to `GET /state/{key}`: from this process if it owns
/// the key, else relayed from the owner through `peers`. `local_only` (a
/// peer asking) never relays further.
pub(crate) fn answer(
    states: &StateQueries,
    key: &str,
    local_only: bool,
    peers: &Client,
) -> Response {
    let this = states;
    {
        let me = this.me();
        if !local_only {
            match this.owner(key) {
                Err(e) => return error(502, key, &format!("cannot read the group: {e}")),
                Ok(None) => {
                    return error(
                        503,
                        key,
                        &format!(
                            "partition {} has no owner now (the group is rebalancing)",
                            this.partition(key)
                        ),
                    )
                }
                Ok(Some(owner)) if owner != me && !owner.is_empty() => {
                    let path = format!("/state/{}?local=1", http::encode(key));
                    return match peers.get(&owner, &path, REMOTE_WAIT) {
                        // The asker was let in here: the owner wants
                        // another token, which is the deployment's fault.
                        Ok((401, _)) => error(
                            502,
                            key,
                            &format!(
                                "owner {owner} refused the relayed query (401): the processes must share one token"
                            ),
                        ),
                        Ok((status, body)) => Response::new(status, "application/json", body),
                        Err(e) => error(502, key, &format!("owner {owner} did not answer: {e}")),
                    };
                }
                Ok(Some(_)) => {}
            }
        }
        match this.local(key) {
            Some(state) => {
                let state = state.and_then(|s| serde_json::from_str(&s).ok());
                let status = if state.is_some() { 200 } else { 404 };
                let answer = Answer {
                    key,
                    partition: this.partition(key),
                    owner: me,
                    state,
                };
                Response::json(status, serde_json::to_string(&answer).unwrap_or_default())
            }
            None => error(
                503,
                key,
                &format!(
                    "partition {} is not owned by this process now",
                    this.partition(key)
                ),
            ),
        }
    }
}

fn error(status: u16, key: &str, reason: &str) -> Response {
    Response::json(
        status,
        serde_json::json!({"key": key, "error": reason}).to_string(),
    )
}
