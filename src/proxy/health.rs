//! Active health checks: every `health-interval`, a `GET` of the pool's
//! `health-check` path on each server, on a connection of its own. A server
//! that doesn't answer 2xx or 3xx within the timeouts is out of service
//! until a later check passes. Passive health (failures of real requests)
//! is `upstream`'s.

use std::io::IoSlice;
use std::sync::Arc;

use super::connect;
use super::forward;
use super::upstream::Upstream;

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
    let node = &upstream.nodes[i];
    let mut conn = connect::connect(&node.addr, spec.connect_timeout).await.map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\nuser-agent: tandem-health-check\r\nconnection: close\r\n\r\n",
        node.host
    );
    let head = async {
        conn.write_all(&mut [IoSlice::new(request.as_bytes())], &mut 0).await.map_err(|e| e.to_string())?;
        forward::final_head(&mut conn, None).await.map_err(|e| e.to_string())
    };
    let head = tokio::time::timeout(spec.response_timeout, head)
        .await
        .map_err(|_| format!("no response within {:?}", spec.response_timeout))??;
    let status = head.parts.status;
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("{path} answered {}", status.as_u16()))
    }
}
