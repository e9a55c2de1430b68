//! What a delivery receipt says, and how it travels.
//!
//! A receipt lists heads of its sender's version vector: per author, the first 8 bytes of
//! the author's id and the contiguous seq held. Receipts are the one kind of gossip that
//! every member sends in every busy room, so their size matters: the list travels as one
//! base64url string of `id (8 bytes) | seq (LEB128)` per author, about 13 bytes each where
//! the JSON list of hex strings that receipts used before (still read) took about 24.

use std::collections::HashMap;
use std::hash::Hash;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Receipts name authors by the first 8 bytes of their id: a receipt only informs delivery
/// counts, and 8 bytes keep honest members apart while a receipt of 256 authors stays small.
pub type ShortId = [u8; 8];

/// The longest LEB128 encoding of a u64.
const MAX_VARINT: usize = 10;

/// A receipt's heads: (short author id, contiguous seq held).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heads(pub Vec<(ShortId, u64)>);

impl Heads {
    /// The packed form: `id | LEB128 seq` per author, base64url without padding.
    pub fn encode(&self) -> String {
        let mut b = Vec::with_capacity(self.0.len() * 11);
        for (id, seq) in &self.0 {
            b.extend_from_slice(id);
            let mut v = *seq;
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    b.push(byte);
                    break;
                }
                b.push(byte | 0x80);
            }
        }
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Reads the packed form; None for anything malformed (never panics).
    pub fn decode(s: &str) -> Option<Heads> {
        let b = URL_SAFE_NO_PAD.decode(s).ok()?;
        let mut out = Vec::new();
        let mut rest = b.as_slice();
        while !rest.is_empty() {
            let (id, tail) = rest.split_first_chunk::<8>()?;
            let (seq, tail) = read_varint(tail)?;
            out.push((*id, seq));
            rest = tail;
        }
        Some(Heads(out))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One LEB128 u64 and what follows it; None if truncated or past 64 bits.
fn read_varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, byte) in b.iter().take(MAX_VARINT).enumerate() {
        let bits = u64::from(byte & 0x7f);
        // The tenth byte may only hold the top bit of a u64.
        if i == MAX_VARINT - 1 && bits > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

impl Serialize for Heads {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Heads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Packed(String),
            /// The first receipt format: `[[author id hex (16 digits), seq], ...]`.
            Listed(Vec<(String, u64)>),
        }
        let bad = || D::Error::custom("malformed receipt heads");
        match Wire::deserialize(d)? {
            Wire::Packed(s) => Heads::decode(&s).ok_or_else(bad),
            Wire::Listed(list) => list
                .into_iter()
                .map(|(author, seq)| {
                    let id = hex::decode(author).ok()?;
                    Some((ShortId::try_from(id.as_slice()).ok()?, seq))
                })
                .collect::<Option<Vec<_>>>()
                .map(Heads)
                .ok_or_else(bad),
        }
    }
}

/// Receipts heard per room over the last second or so. A member that has just joined a
/// busy room, or whose room has been quiet, knows few of the others, so its own count says
/// the room is small and its receipts may go out every second: when a message reaches
/// hundreds of members at once, all of them would answer within that second, each receipt
/// to every member. What a member hears tells it the room already carries its share.
#[derive(Debug)]
pub struct Heard<K> {
    current: HashMap<K, u32>,
    previous: HashMap<K, u32>,
}

impl<K> Default for Heard<K> {
    fn default() -> Self {
        Heard {
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Heard<K> {
    /// Counts a valid receipt received in `room`.
    pub fn record(&mut self, room: K) {
        *self.current.entry(room).or_default() += 1;
    }

    /// Starts a new window; call once per receipt interval.
    pub fn roll(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    /// Receipts heard in `room` in the last full window or the current one, whichever
    /// holds more.
    pub fn recent(&self, room: &K) -> u32 {
        let get = |m: &HashMap<K, u32>| m.get(room).copied().unwrap_or(0);
        get(&self.current).max(get(&self.previous))
    }
}

/// Receipts per second a whole room carries at most: each costs every member a signature
/// check.
pub const PER_ROOM_PER_S: f64 = 4.0;
/// ... and at least, however quiet and big the room.
pub const MIN_PER_ROOM_PER_S: f64 = 0.1;
/// Receipt deliveries per second a room may always cost (four receipts a second to 40
/// members): rooms up to that size get [`PER_ROOM_PER_S`] whatever their traffic, so a
/// sender in a small room hears back within seconds.
const SMALL_ROOM_DELIVERIES_PER_S: f64 = 160.0;
/// The longest a member waits between two receipts in one room. Past a few minutes the
/// whole receipt every member sends now and then says as much; what a member hears
/// ([`Heard`]) keeps bigger rooms at their share.
pub const MAX_SPACING_S: f64 = 600.0;

/// Receipts per second a room of `members` aims at, carrying `messages_per_s`: as many as
/// its messages (a receipt answers messages; more cost every member more signature checks
/// than the messages themselves: at 500 members and one message a second, four receipts a
/// second were 80% of what every member checked), but never fewer than a small room gets,
/// within [`MIN_PER_ROOM_PER_S`]..=[`PER_ROOM_PER_S`].
pub fn budget(members: usize, messages_per_s: f64) -> f64 {
    let small_room = SMALL_ROOM_DELIVERIES_PER_S / members.max(1) as f64;
    messages_per_s
        .max(small_room)
        .clamp(MIN_PER_ROOM_PER_S, PER_ROOM_PER_S)
}

/// The least window, in seconds, over which members spread their first receipts after a
/// quiet spell while they cannot tell how big their room is (see [`first_spacing`]).
pub const UNSIZED_WINDOW_S: f64 = 30.0;

/// The spacing a member's first receipt after a quiet spell is drawn within (a random
/// part of it), given the `spacing` the room's estimated size calls for, the room members
/// it is connected to (`room_peers`), the connection budget's `target` of them, and
/// whether the room's size is known ([`crate::core::Core::room_size_known`]).
///
/// A member connected to fewer than `target` members is in a room that small (members
/// connect to that many when there are that many), and one that knows the room's size
/// paces by it. Otherwise the room may hold hundreds: every member got the same message
/// within a second, has heard from nobody, and paced by the few it knows every one of
/// them would answer within a second or two, each receipt checked by all (measured at
/// 500 members: receipts twice the work of the messages, and a tail of seconds). Spread
/// over [`UNSIZED_WINDOW_S`], the first receipts are heard before most members' are due,
/// and what is heard then paces the rest ([`Heard`], [`crate::census`]).
pub fn first_spacing(spacing: f64, room_peers: usize, target: usize, size_known: bool) -> f64 {
    if size_known || room_peers < target {
        spacing
    } else {
        spacing.max(UNSIZED_WINDOW_S)
    }
}

/// Seconds between two of one member's receipts in a room of `members` (as far as it
/// knows), so that the room carries `budget` receipts a second in all.
pub fn spacing(members: usize, budget: f64) -> f64 {
    (members.max(1) as f64 / budget.max(MIN_PER_ROOM_PER_S)).clamp(1.0, MAX_SPACING_S)
}

/// Messages per second each room carries (received and sent), smoothed over about ten
/// seconds: what a room's receipt [`budget`] follows.
#[derive(Debug)]
pub struct MessageRate<K> {
    /// Per room: the smoothed rate, and the messages counted since the last tick.
    rooms: HashMap<K, (f64, u32)>,
}

/// Weight of the last second in the smoothed rate (one tick a second: about ten seconds).
const RATE_WEIGHT: f64 = 0.1;

impl<K> Default for MessageRate<K> {
    fn default() -> Self {
        MessageRate {
            rooms: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> MessageRate<K> {
    /// Counts a message in `room`.
    pub fn record(&mut self, room: K) {
        self.rooms.entry(room).or_insert((0.0, 0)).1 += 1;
    }

    /// Folds the last second's count into the rate; call once a second. Rooms that have
    /// gone quiet are forgotten.
    pub fn tick(&mut self) {
        for (rate, count) in self.rooms.values_mut() {
            *rate = *rate * (1.0 - RATE_WEIGHT) + f64::from(*count) * RATE_WEIGHT;
            *count = 0;
        }
        self.rooms.retain(|_, (rate, _)| *rate > 1e-3);
    }

    /// Messages per second in `room`.
    pub fn per_s(&self, room: &K) -> f64 {
        self.rooms.get(room).map_or(0.0, |(rate, _)| *rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_receipts_spread_out_only_where_the_room_may_be_big() {
        // A room smaller than the connection target: we know it all; pace as usual.
        assert_eq!(first_spacing(1.0, 4, 8, false), 1.0);
        // Connected to the target and nothing heard twice: could be 500 members.
        assert_eq!(first_spacing(1.0, 8, 8, false), UNSIZED_WINDOW_S);
        assert_eq!(first_spacing(1.0, 15, 8, false), UNSIZED_WINDOW_S);
        // Once the size is known, by it, whichever way it goes.
        assert_eq!(first_spacing(2.5, 15, 8, true), 2.5);
        assert_eq!(first_spacing(125.0, 15, 8, true), 125.0);
        // Never sooner than the size already calls for.
        assert_eq!(first_spacing(125.0, 15, 8, false), 125.0);
    }

    #[test]
    fn small_rooms_keep_fast_receipts_and_big_ones_follow_their_messages() {
        // Up to 40 members: four a second, quiet or not (spacing 10 s at 40).
        assert_eq!(budget(5, 0.0), PER_ROOM_PER_S);
        assert_eq!(budget(40, 0.0), PER_ROOM_PER_S);
        assert_eq!(spacing(40, budget(40, 0.0)), 10.0);
        assert_eq!(spacing(3, budget(3, 0.0)), 1.0);
        // 500 members, one message a second: one receipt a second, not four.
        assert_eq!(budget(500, 1.0), 1.0);
        assert_eq!(spacing(500, budget(500, 1.0)), 500.0);
        // Busy: at most four a second whatever the size.
        assert_eq!(budget(500, 50.0), PER_ROOM_PER_S);
        // Quiet and big: a floor, and a ceiling on the spacing.
        assert_eq!(budget(100_000, 0.0), MIN_PER_ROOM_PER_S);
        assert_eq!(spacing(100_000, budget(100_000, 0.0)), MAX_SPACING_S);
        assert_eq!(spacing(0, budget(0, 0.0)), 1.0);
    }

    #[test]
    fn message_rate_follows_the_traffic_and_forgets_quiet_rooms() {
        let mut rate = MessageRate::default();
        for _ in 0..60 {
            rate.record(1);
            rate.record(1);
            rate.record(2);
            rate.tick();
        }
        assert!((rate.per_s(&1) - 2.0).abs() < 0.01, "{}", rate.per_s(&1));
        assert!((rate.per_s(&2) - 1.0).abs() < 0.01);
        assert_eq!(rate.per_s(&3), 0.0);
        for _ in 0..120 {
            rate.tick();
        }
        assert_eq!(rate.per_s(&1), 0.0);
        assert!(rate.rooms.is_empty());
    }

    #[test]
    fn heard_receipts_count_over_the_last_window() {
        let mut heard = Heard::default();
        assert_eq!(heard.recent(&1), 0);
        heard.record(1);
        heard.record(1);
        heard.record(2);
        assert_eq!((heard.recent(&1), heard.recent(&2)), (2, 1));
        heard.roll();
        heard.record(1);
        // The window before still counts until it is a full window old.
        assert_eq!((heard.recent(&1), heard.recent(&2)), (2, 1));
        heard.roll();
        assert_eq!((heard.recent(&1), heard.recent(&2)), (1, 0));
        heard.roll();
        assert_eq!(heard.recent(&1), 0);
    }

    #[test]
    fn packed_heads_round_trip_and_stay_small() {
        let heads = Heads(vec![
            ([1; 8], 0),
            ([2; 8], 127),
            ([3; 8], 128),
            ([4; 8], 1 << 48),
            ([5; 8], u64::MAX),
        ]);
        assert_eq!(Heads::decode(&heads.encode()), Some(heads.clone()));
        let json = serde_json::to_string(&heads).unwrap();
        assert_eq!(serde_json::from_str::<Heads>(&json).unwrap(), heads);
        // Forty authors with seqs below 16,384: 10 bytes each before base64.
        let forty = Heads((0..40u8).map(|i| ([i; 8], 5000)).collect());
        assert_eq!(forty.encode().len(), (400 * 4usize).div_ceil(3));
        assert_eq!(Heads::default().encode(), "");
        assert_eq!(Heads::decode(""), Some(Heads::default()));
    }

    #[test]
    fn the_listed_form_is_still_read() {
        let old = r#"[["0102030405060708", 7], ["ffffffffffffffff", 1]]"#;
        let heads: Heads = serde_json::from_str(old).unwrap();
        assert_eq!(
            heads,
            Heads(vec![([1, 2, 3, 4, 5, 6, 7, 8], 7), ([0xff; 8], 1)])
        );
    }

    #[test]
    fn malformed_heads_are_refused() {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        // An id cut short, a seq missing, a seq cut short, a seq past 64 bits, bad base64.
        for s in [
            b64(&[1; 5]),
            b64(&[1; 8]),
            b64(&[1, 1, 1, 1, 1, 1, 1, 1, 0x80]),
            b64(&[[1u8; 8].as_slice(), &[0xff; 9], &[0x02]].concat()),
            b64(&[[1u8; 8].as_slice(), &[0xff; 11]].concat()),
            "not base64!".to_string(),
        ] {
            assert_eq!(Heads::decode(&s), None, "{s}");
            let json = serde_json::to_string(&s).unwrap();
            assert!(serde_json::from_str::<Heads>(&json).is_err());
        }
        for old in [r#"[["01020304", 7]]"#, r#"[["zz02030405060708", 7]]"#, "7"] {
            assert!(serde_json::from_str::<Heads>(old).is_err(), "{old}");
        }
    }
}
