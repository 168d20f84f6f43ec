//! Active health checks: every `health-interval`, a `GET` of the pool's
//! `health-check` path on each server, on a connection of its own. A server
//! that doesn't answer 2xx or 3xx within the timeouts is out of service
//! until a later check passes. Passive health (failures of real requests)
//! is `upstream`'s.

use std::sync::Arc;

use http::{header, Request};

use super::connect;
use super::upstream::Upstream;
use crate::front::ResponseBody;

/// Starts the checks of `upstream`, if it has a `health-check` path. They
/// run for as long as the runtime does.
pub fn spawn(upstream: &Arc<Upstream>) {
    let Some(path) = upstream.spec.health_check.clone() else { return };
    let upstream = Arc::clone(upstream);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(upstream.spec.health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for i in 0..upstream.nodes.len() {
                match check(&upstream, i, &path).await {
                    Ok(()) => upstream.set_down(i, false, ""),
                    Err(why) => upstream.set_down(i, true, &why),
                }
            }
        }
    });
}

async fn check(upstream: &Upstream, i: usize, path: &str) -> Result<(), String> {
    let spec = &upstream.spec;
    let addr = &upstream.nodes[i].addr;
    let mut sender = connect::connect(addr, spec.connect_timeout).await.map_err(|e| e.to_string())?;
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "tandem-health-check")
        .body(ResponseBody::empty())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(spec.response_timeout, sender.send_request(request))
        .await
        .map_err(|_| format!("no response within {:?}", spec.response_timeout))?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("{path} answered {}", status.as_u16()))
    }
}
