//! Malformed input never panics (nor crashes the decoder): random bytes, cuts and byte flips of a
//! real clip go through probe, measure, poster and assemble.

use aiprod_media::{Animatic, CameraMove, Format, Media, MediaError, PureMedia};
use proptest::prelude::*;
use std::sync::LazyLock;

const FORMAT: Format = Format {
    width: 64,
    height: 48,
    fps: 12,
};

static MEDIA: LazyLock<PureMedia> = LazyLock::new(PureMedia::default);
static CLIP: LazyLock<Vec<u8>> = LazyLock::new(|| {
    MEDIA
        .render_animatic(
            &Animatic {
                shot_number: 1,
                shot_count: 2,
                description: "fuzz",
                duration_ms: 1000,
                camera: CameraMove::Pan,
                palette: &[[10, 200, 90]],
                format: FORMAT,
                seed: 9,
            },
            None,
        )
        .expect("render")
});

/// A result is fine unless it reports a caught panic.
fn no_panic<T>(what: &str, r: Result<T, MediaError>) {
    if let Err(e) = r {
        assert!(!e.to_string().contains("internal error"), "{what}: {e}");
    }
}

fn exercise(bytes: &[u8]) {
    no_panic("probe", MEDIA.probe(bytes));
    no_panic("measure", MEDIA.measure(bytes));
    no_panic("poster", MEDIA.poster(bytes, 32));
    no_panic("assemble", MEDIA.assemble(&[bytes], FORMAT));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        prop_assert!(MEDIA.probe(&bytes).is_err());
        exercise(&bytes);
    }

    #[test]
    fn a_cut_clip_is_an_error(cut in 0usize..100_000) {
        let cut = cut % CLIP.len();
        let bytes = &CLIP[..cut];
        prop_assert!(MEDIA.probe(bytes).is_err());
        prop_assert!(MEDIA.measure(bytes).is_err());
        prop_assert!(MEDIA.poster(bytes, 32).is_err());
        prop_assert!(MEDIA.assemble(&[bytes], FORMAT).is_err());
    }

    #[test]
    fn flipped_bytes_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12)
    ) {
        let mut bytes = CLIP.clone();
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= v | 1;
        }
        exercise(&bytes);
    }

    #[test]
    fn garbage_after_a_valid_header_never_panics(
        keep in 0usize..2000,
        tail in proptest::collection::vec(any::<u8>(), 0..800)
    ) {
        let keep = keep % CLIP.len();
        let mut bytes = CLIP[..keep].to_vec();
        bytes.extend_from_slice(&tail);
        exercise(&bytes);
    }
}

#[test]
fn the_intact_clip_is_fine() {
    let m = MEDIA.measure(&CLIP).expect("measure");
    assert_eq!((m.decoded_frames, m.decode_errors), (12, 0));
}
