// The model-checked part of the conformance suite, included into `suite` by
// `kv_conformance.rs`: random operations checked against a `BTreeMap`.

/// Thousands of random operations, each checked against a `BTreeMap` model.
pub fn random_ops_match_btreemap_model(kv: &dyn Kv) {
    random_ops(kv, 0x5eed_0001, 4000);
}

/// Keys from a tiny alphabet including the edge bytes, so ops collide and bounds hit exactly.
fn random_key(rng: &mut StdRng) -> Vec<u8> {
    const ALPHABET: [u8; 4] = [0x00, 0x01, 0x7f, 0xff];
    let len = rng.gen_range(0..=4);
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())])
        .collect()
}

fn random_value(rng: &mut StdRng) -> Vec<u8> {
    // Straddles the test blob threshold (64 bytes).
    let len = rng.gen_range(0..=200);
    (0..len).map(|_| rng.gen()).collect()
}

fn random_space(rng: &mut StdRng) -> Space {
    if rng.gen_bool(0.5) {
        Space::Meta
    } else {
        Space::Data
    }
}

type Model = [BTreeMap<Vec<u8>, Vec<u8>>; 2];

fn idx(space: Space) -> usize {
    match space {
        Space::Meta => 0,
        Space::Data => 1,
        Space::Segments => unreachable!("the store never uses the segment catalog"),
    }
}

fn model_scan(model: &Model, space: Space, start: &[u8], end: &[u8], dir: Dir) -> Pairs {
    if start >= end {
        return Vec::new();
    }
    let range = model[idx(space)]
        .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
        .map(|(k, v)| (k.clone(), v.clone()));
    match dir {
        Dir::Forward => range.collect(),
        Dir::Reverse => range.rev().collect(),
    }
}

fn model_sfp(
    model: &Model,
    space: Space,
    lower: &[u8],
    key: &[u8],
) -> Option<(Vec<u8>, Vec<u8>)> {
    if lower > key {
        return None;
    }
    model[idx(space)]
        .range::<[u8], _>((Bound::Included(lower), Bound::Included(key)))
        .next_back()
        .map(|(k, v)| (k.clone(), v.clone()))
}

/// Runs a random read against `r` and the model, asserting they agree.
fn check_random_read<R: KvRead + ?Sized>(r: &R, model: &Model, rng: &mut StdRng, step: usize) {
    let space = random_space(rng);
    match rng.gen_range(0..3) {
        0 => {
            let k = random_key(rng);
            assert_eq!(
                get(r, space, &k),
                model[idx(space)].get(&k).cloned(),
                "step {step}: get {space:?} {k:?}"
            );
        }
        1 => {
            let (a, b) = (random_key(rng), random_key(rng));
            let dir = if rng.gen_bool(0.5) {
                Dir::Forward
            } else {
                Dir::Reverse
            };
            let limit = if rng.gen_bool(0.3) {
                rng.gen_range(0..5)
            } else {
                usize::MAX
            };
            let mut want = model_scan(model, space, &a, &b, dir);
            want.truncate(limit);
            assert_eq!(
                scan_limit(r, space, &a, &b, dir, limit),
                want,
                "step {step}: scan {space:?} [{a:?}, {b:?}) {dir:?} limit {limit}"
            );
        }
        _ => {
            let (lower, key) = (random_key(rng), random_key(rng));
            assert_eq!(
                sfp(r, space, &lower, &key),
                model_sfp(model, space, &lower, &key),
                "step {step}: seek_for_prev {space:?} lower {lower:?} key {key:?}"
            );
        }
    }
}

fn random_ops(kv: &dyn Kv, seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model: Model = Default::default();
    // A read view and the model as it was when the view was taken.
    let mut view: Option<(Box<dyn KvRead + '_>, Model)> = None;

    for step in 0..steps {
        match rng.gen_range(0..100) {
            // Writes: a batch of 1..=8 random puts/deletes, applied in order to the model.
            0..=44 => {
                let mut batch = Batch::new();
                for _ in 0..rng.gen_range(1..=8) {
                    let space = random_space(&mut rng);
                    let key = random_key(&mut rng);
                    if rng.gen_bool(0.7) {
                        let value = random_value(&mut rng);
                        model[idx(space)].insert(key.clone(), value.clone());
                        batch.put(space, key, value);
                    } else {
                        model[idx(space)].remove(&key);
                        batch.delete(space, key);
                    }
                }
                kv.write(batch, rng.gen_bool(0.05)).expect("write");
            }
            45..=84 => check_random_read(kv, &model, &mut rng, step),
            85..=94 => {
                if let Some((v, m)) = &view {
                    check_random_read(&**v, m, &mut rng, step);
                }
            }
            95..=97 => view = Some((kv.read_view(), model.clone())),
            98 => compact(kv, random_space(&mut rng)),
            _ => kv.sync().expect("sync"),
        }
    }

    // Final full comparison of the live store and the last view.
    for space in Space::ALL {
        let want = model_scan(&model, space, b"", &[0xff; 8], Dir::Forward);
        assert_eq!(scan_all(kv, space, b"", &[0xff; 8], Dir::Forward), want);
        if let Some((v, m)) = &view {
            let want = model_scan(m, space, b"", &[0xff; 8], Dir::Reverse);
            assert_eq!(scan_all(&**v, space, b"", &[0xff; 8], Dir::Reverse), want);
        }
    }
}
