//! Rebuilding a pool from disk, and reading it out for a snapshot.
//!
//! A pool being restored takes stored [`Change`]s in the order they were made ([`Pool::restore`]), then
//! [`Pool::finish_restore`] applies the clock and puts it in service. Until then, keys sit in the records,
//! the index, the free list and the lease table, but nothing is timed: no key is on the keep-alive list
//! and no lease has a timer. Changes arrive in no deadline order (a snapshot is written in slot order),
//! so the keep-alive list, which must be sorted, is built once at the end from a sort; the deadlines
//! that passed while the daemon was down are applied then too.
//!
//! Every change states the new value of what it changed, so applying one to a key that already has it
//! (a snapshot taken while the log went on) changes nothing, and a change to a key that is not there (it
//! was deleted or expired before the snapshot reached it) is skipped.
//!
//! A lease whose connection asked for release on close is restored free: that connection ended with
//! the daemon.

use std::time::Duration;

use super::changes::{Change, KeepaliveMode, KeyImage, PlaceImage, NEVER_MS};
use super::lease::{Lease, Timing};
use super::list::{Links, NIL};
use super::record::{KeyRecord, Place, Slot, NO_SECRET};
use super::secrets::{OwnKeepalive, SecretEntry};
use super::{Millis, Pool, Timer, NEVER};

/// What [`Pool::finish_restore`] found.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Restored {
    /// Keys in service afterwards.
    pub keys: usize,
    /// Keys deleted because their keep-alive deadline passed while the daemon was down.
    pub expired: usize,
    /// Leases and delays that ended while the daemon was down; their keys are free.
    pub leases_ended: usize,
}

impl Pool {
    /// Applies one stored change to a pool being restored. Returns the fencing token it carries, if any,
    /// so that the caller can make every later token larger.
    pub fn restore(&mut self, change: &Change<'_>) -> Option<u64> {
        match *change {
            Change::Key(ref image) => {
                if let Some(slot) = self.index.find(&self.keys, &image.id) {
                    self.forget_key(slot);
                }
                self.restore_key(image);
            }
            Change::Placed { id, leases, place } => {
                let slot = self.index.find(&self.keys, &id)?;
                self.unplace(slot);
                self.keys[slot].leases = leases;
                self.put(slot, place);
            }
            Change::KeptAlive { id, alive_until_ms } => {
                let slot = self.index.find(&self.keys, &id)?;
                self.keys[slot].alive_until = self.restored_deadline(alive_until_ms);
            }
            Change::Deleted { id } => {
                let slot = self.index.find(&self.keys, &id)?;
                self.forget_key(slot);
            }
        }
        match change {
            Change::Key(KeyImage { place: PlaceImage::Blocked { token, .. }, .. })
            | Change::Placed { place: PlaceImage::Blocked { token, .. }, .. } => Some(*token),
            _ => None,
        }
    }

    /// Loads one key of a snapshot into a pool being restored. Cheaper than [`Self::restore`]: it does not
    /// look for the id first, which is right only while loading one snapshot into an empty pool (a
    /// snapshot holds each key once). Returns the fencing token it carries, if any.
    ///
    /// The key is not indexed yet: call [`Self::index_snapshot_keys`] once the snapshot is loaded.
    pub fn restore_snapshot_key(&mut self, image: &KeyImage<'_>) -> Option<u64> {
        let alive_until = self.restored_deadline(image.alive_until_ms);
        let slot = self.keys.insert(KeyRecord {
            id: image.id,
            links: Links::UNLINKED,
            place: Place::Free { position: NIL },
            leases: image.leases,
            secret: NO_SECRET,
            created_ms: image.created_ms,
            alive_until,
        });
        self.unindexed.push(slot);
        self.restore_secret_and_place(slot, image);
        match image.place {
            PlaceImage::Blocked { token, .. } => Some(token),
            _ => None,
        }
    }

    /// Indexes the keys [`Self::restore_snapshot_key`] loaded, all at once (see `IdIndex::insert_many`).
    pub fn index_snapshot_keys(&mut self) {
        let unindexed = std::mem::take(&mut self.unindexed);
        self.index.insert_many(&self.keys, &unindexed);
    }

    /// Makes room for `keys` more keys in a pool being restored, so that loading them never rehashes.
    pub fn reserve(&mut self, keys: usize) {
        self.keys.reserve(keys);
        self.index.reserve(keys);
        self.free.reserve(keys);
        self.unindexed.reserve(keys);
    }

    /// Puts a restored pool in service: deletes the keys whose keep-alive deadline has passed, frees the
    /// keys whose lease or delay has ended, and times everything else. O(n log n), once, at start-up.
    ///
    /// Deadlines later than a window allows from now (the wall clock went back, or the daemon restarted
    /// with a shorter window) are brought in to now plus the window.
    pub fn finish_restore(&mut self) -> Restored {
        let now = self.clock.now();
        let mut restored = Restored::default();

        let dead: Vec<Slot> =
            self.keys.iter().filter(|(_, record)| record.alive_until <= now).map(|(slot, _)| slot).collect();
        for &slot in &dead {
            self.forget_key(slot);
        }
        restored.expired = dead.len();

        let leases: Vec<u32> = self.leases.iter().map(|(at, _)| at as u32).collect();
        for lease in leases {
            let until = self.leases[lease as usize].until;
            if until <= now {
                let Lease { slot, .. } = self.drop_lease_entry(lease);
                self.make_free(slot, now);
                restored.leases_ended += 1;
            } else {
                let timer = self.arm(Timer::LeaseEnds { lease }, until, now);
                self.leases[lease as usize].timing = Timing::Timer(timer);
            }
        }

        let latest = now.after(self.config.keepalive_timeout);
        let mut on_list = Vec::new();
        let mut own_window = Vec::new();
        for (slot, record) in self.keys.iter_mut() {
            let own = (record.secret != NO_SECRET).then(|| &self.secrets.get(record.secret).keepalive);
            match own {
                None | Some(OwnKeepalive::Pool) => {
                    record.alive_until = record.alive_until.min(latest);
                    on_list.push((record.alive_until, slot as Slot));
                }
                Some(OwnKeepalive::Never) => {}
                Some(OwnKeepalive::Window { window, .. }) => {
                    record.alive_until = record.alive_until.min(now.after(*window));
                    own_window.push(slot as Slot);
                }
            }
        }
        on_list.sort_unstable();
        for (_, slot) in on_list {
            self.keepalive.push_back(&mut self.keys, slot);
        }
        self.arm_keepalive_timer_if_idle(now);
        for slot in own_window {
            let until = self.keys[slot].alive_until;
            let timer = self.arm(Timer::KeyExpires { slot }, until, now);
            let secret = self.keys[slot].secret;
            if let OwnKeepalive::Window { timer: slot_timer, .. } = &mut self.secrets.get_mut(secret).keepalive {
                *slot_timer = Some(timer);
            }
        }
        restored.keys = self.keys.len();
        restored
    }

    /// Calls `each` with the image of every key in slots `from..from + max`, and returns where the next
    /// call should start, or `None` once every slot has been seen. A snapshot walks the pool this way, a
    /// bounded chunk per hold of the daemon's lock.
    pub fn export(&self, from: usize, max: usize, mut each: impl FnMut(&KeyImage<'_>)) -> Option<usize> {
        let end = from.saturating_add(max).min(self.keys.slots_end());
        for slot in from..end {
            if self.keys.get(slot as Slot).is_some() {
                each(&self.image(slot as Slot));
            }
        }
        (end < self.keys.slots_end()).then_some(end)
    }

    /// Inserts a key that is not in the pool, in the state `image` describes.
    fn restore_key(&mut self, image: &KeyImage<'_>) {
        let alive_until = self.restored_deadline(image.alive_until_ms);
        let slot = self.insert_record(image.id, image.created_ms, alive_until);
        self.keys[slot].leases = image.leases;
        self.restore_secret_and_place(slot, image);
    }

    /// Gives a key just inserted its secret (if any) and its place.
    fn restore_secret_and_place(&mut self, slot: Slot, image: &KeyImage<'_>) {
        if let Some((bytes, mode)) = image.secret {
            let keepalive = match mode {
                KeepaliveMode::Pool => OwnKeepalive::Pool,
                KeepaliveMode::Never => OwnKeepalive::Never,
                KeepaliveMode::Window(ms) => OwnKeepalive::Window { window: Duration::from_millis(ms), timer: None },
            };
            let entry = self.secrets.insert(SecretEntry { bytes: bytes.into(), slot, keepalive });
            self.keys[slot].secret = entry;
        }
        self.put(slot, image.place);
    }

    /// Gives a key with no place (new, or just taken out of its old one) the place `place`.
    fn put(&mut self, slot: Slot, place: PlaceImage) {
        let (until_ms, token, delayed) = match place {
            PlaceImage::Free | PlaceImage::Blocked { autorel: true, .. } => {
                let position = self.free.push(slot);
                self.keys[slot].place = Place::Free { position };
                return;
            }
            PlaceImage::Blocked { until_ms, token, autorel: false } => (until_ms, token, false),
            PlaceImage::Delayed { until_ms } => (until_ms, 0, true),
        };
        let lease = self.leases.insert(Lease {
            slot,
            until: self.restored_deadline(until_ms),
            timing: Timing::Untimed,
            token,
            holder: NIL,
            links: Links::UNLINKED,
            block_links: Links::UNLINKED,
        }) as u32;
        self.keys[slot].place = if delayed {
            self.delayed += 1;
            Place::Delayed { lease }
        } else {
            Place::Blocked { lease }
        };
    }

    /// Takes a key of a pool being restored out of the free list or the lease table.
    fn unplace(&mut self, slot: Slot) {
        match self.keys[slot].place {
            Place::Free { position } => {
                self.take_from_free_list(position);
            }
            Place::Blocked { lease } | Place::Delayed { lease } => {
                self.drop_lease_entry(lease);
            }
        }
        self.keys[slot].place = Place::Free { position: NIL };
    }

    /// Removes a key of a pool being restored: like `remove_key`, for a key on no list and with no timer.
    fn forget_key(&mut self, slot: Slot) {
        self.unplace(slot);
        let secret = self.keys[slot].secret;
        if secret != NO_SECRET {
            self.secrets.remove(secret);
        }
        let id = self.keys[slot].id;
        self.index.remove(&self.keys, &id);
        self.keys.remove(slot);
    }

    /// A stored deadline in engine time.
    fn restored_deadline(&self, unix_ms: u64) -> Millis {
        if unix_ms == NEVER_MS {
            NEVER
        } else {
            self.clock.from_unix_ms(unix_ms)
        }
    }
}
