//! One active run per pipeline: `_lake/locks/<pipeline>`, taken with put-if-absent.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::zone::{DynZoneStore, Key, PutOutcome, ZoneStoreExt, json_bytes};
use crate::{Error, Result};

/// What the lock object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The pipeline.
    pub pipeline: String,
    /// The run holding it.
    pub run_id: String,
    /// Who: `user@host pid N`.
    pub holder: String,
    /// When it was taken.
    pub acquired: DateTime<Utc>,
    /// When it stops being valid if never released.
    pub expires: DateTime<Utc>,
}

/// A held lock; give it back with [`release`].
#[derive(Debug, Clone)]
pub struct LockGuard {
    key: Key,
    takeover: Option<Key>,
    /// What was written.
    pub info: LockInfo,
    /// Set when an expired lock of another run was taken over.
    pub took_over: Option<LockInfo>,
}

/// The key of a pipeline's lock.
pub fn lock_key(pipeline: &str) -> Result<Key> {
    Key::new(format!("_lake/locks/{pipeline}"))
}

/// Take the pipeline's lock for `run_id`.
///
/// Fails with [`Error::Locked`] naming the holder when a live lock exists. An expired lock is
/// taken over: the taker first wins a put-if-absent marker named after the expired run, so of
/// several processes racing for one expired lock exactly one takes it.
pub async fn acquire(
    store: &DynZoneStore,
    pipeline: &str,
    run_id: &str,
    holder: &str,
    ttl: Duration,
) -> Result<LockGuard> {
    let key = lock_key(pipeline)?;
    let now = Utc::now();
    let info = LockInfo {
        pipeline: pipeline.to_owned(),
        run_id: run_id.to_owned(),
        holder: holder.to_owned(),
        acquired: now,
        expires: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(6)),
    };
    if store.put_if_absent(&key, json_bytes(&info)).await? == PutOutcome::Created {
        return Ok(LockGuard {
            key,
            takeover: None,
            info,
            took_over: None,
        });
    }
    let current: LockInfo = match store.get_json(&key).await? {
        Some(c) => c,
        // Released between our two calls: try once more.
        None => {
            return match store.put_if_absent(&key, json_bytes(&info)).await? {
                PutOutcome::Created => Ok(LockGuard {
                    key,
                    takeover: None,
                    info,
                    took_over: None,
                }),
                PutOutcome::AlreadyExists => Err(locked_unknown(pipeline, &key)),
            };
        }
    };
    if current.expires > now && !holder_is_gone(&current.holder) {
        return Err(Error::Locked {
            pipeline: pipeline.to_owned(),
            run_id: current.run_id,
            holder: current.holder,
            expires: current.expires.to_rfc3339(),
            key: key.to_string(),
        });
    }
    let marker = Key::new(format!(
        "_lake/locks/{pipeline}.takeover-{}",
        current.run_id
    ))?;
    if store.put_if_absent(&marker, json_bytes(&info)).await? == PutOutcome::AlreadyExists {
        return Err(Error::Locked {
            pipeline: pipeline.to_owned(),
            run_id: current.run_id,
            holder: format!(
                "{} (expired; being taken over by another run)",
                current.holder
            ),
            expires: current.expires.to_rfc3339(),
            key: key.to_string(),
        });
    }
    store.put_json(&key, &info).await?;
    Ok(LockGuard {
        key,
        takeover: Some(marker),
        info,
        took_over: Some(current),
    })
}

fn locked_unknown(pipeline: &str, key: &Key) -> Error {
    Error::Locked {
        pipeline: pipeline.to_owned(),
        run_id: "?".into(),
        holder: "another run".into(),
        expires: "?".into(),
        key: key.to_string(),
    }
}

/// Give the lock back, if it is still ours (a run that outlived its expiry and was taken over
/// must not delete the new holder's lock).
pub async fn release(store: &DynZoneStore, guard: &LockGuard) -> Result<()> {
    if let Some(current) = store.get_json::<LockInfo>(&guard.key).await?
        && current.run_id == guard.info.run_id
    {
        store.delete(&guard.key).await?;
    }
    if let Some(marker) = &guard.takeover {
        store.delete(marker).await?;
    }
    Ok(())
}

/// The current lock of a pipeline, if any.
pub async fn current(store: &DynZoneStore, pipeline: &str) -> Result<Option<LockInfo>> {
    store.get_json(&lock_key(pipeline)?).await
}

/// True when `lock` holds: not expired, and its holder not a process of this host that is
/// gone.
pub fn is_live(lock: &LockInfo) -> bool {
    lock.expires > Utc::now() && !holder_is_gone(&lock.holder)
}

/// True when `holder` (`user@host pid N`) names a process of this host that no longer exists:
/// its run was killed (kill -9, a crash) and its lock can be taken over before it expires.
fn holder_is_gone(holder: &str) -> bool {
    let Some((who, pid)) = holder.rsplit_once(" pid ") else {
        return false;
    };
    let Some((_, host)) = who.split_once('@') else {
        return false;
    };
    let Ok(pid) = pid.trim().parse::<u32>() else {
        return false;
    };
    if host != crate::run::this_host() || pid == std::process::id() {
        return false;
    }
    if !cfg!(target_os = "linux") || !std::path::Path::new("/proc/self").exists() {
        return false;
    }
    // Gone, or a zombie (killed, not yet reaped).
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(status) => status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|st| st.trim_start().starts_with('Z')),
    }
}
