//! Per-frame luma measurements (see the crate docs for the definitions).

/// Luma below this is "black" (limited-range video: 16 is black).
pub(crate) const BLACK_LUMA: u8 = 32;
/// Share of black samples that makes a frame black.
pub(crate) const BLACK_PIXEL_RATIO: f64 = 0.98;
/// Mean absolute luma difference under which a frame repeats the previous one
/// (ffmpeg freezedetect's default: −60 dB of 255).
pub(crate) const FROZEN_MAFD: f64 = 0.255;
/// Laplacian variance giving sharpness 0.5.
pub(crate) const SHARPNESS_HALF: f64 = 100.0;

/// Accumulates the measurements over a clip's frames, in display order.
#[derive(Default)]
pub(crate) struct Accumulator {
    frames: u32,
    black: u32,
    frozen: u32,
    sharpness_sum: f64,
    contrast_sum: f64,
    prev: Vec<u8>,
    prev_dims: (usize, usize),
}

/// What one frame looks like.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameStats {
    pub black: bool,
    pub sharpness: f64,
    pub contrast: f64,
}

/// Measures one luma plane.
pub(crate) fn frame_stats(y: &[u8], stride: usize, w: usize, h: usize) -> FrameStats {
    let n = (w * h).max(1) as f64;
    let mut dark = 0usize;
    let mut sum = 0u64;
    let mut sum_sq = 0u64;
    for r in 0..h {
        for &v in &y[r * stride..r * stride + w] {
            dark += usize::from(v < BLACK_LUMA);
            sum += u64::from(v);
            sum_sq += u64::from(v) * u64::from(v);
        }
    }
    let mean = sum as f64 / n;
    let var = (sum_sq as f64 / n - mean * mean).max(0.0);
    // 4-neighbour Laplacian over the interior.
    let mut lsum = 0i64;
    let mut lsq = 0i64;
    let mut ln = 0i64;
    if w >= 3 && h >= 3 {
        for r in 1..h - 1 {
            let up = &y[(r - 1) * stride..(r - 1) * stride + w];
            let mid = &y[r * stride..r * stride + w];
            let down = &y[(r + 1) * stride..(r + 1) * stride + w];
            for c in 1..w - 1 {
                let l = 4 * i64::from(mid[c])
                    - i64::from(mid[c - 1])
                    - i64::from(mid[c + 1])
                    - i64::from(up[c])
                    - i64::from(down[c]);
                lsum += l;
                lsq += l * l;
            }
            ln += (w - 2) as i64;
        }
    }
    let lap_var = if ln > 0 {
        let m = lsum as f64 / ln as f64;
        (lsq as f64 / ln as f64 - m * m).max(0.0)
    } else {
        0.0
    };
    FrameStats {
        black: dark as f64 >= BLACK_PIXEL_RATIO * n,
        sharpness: lap_var / (lap_var + SHARPNESS_HALF),
        contrast: var.sqrt() / 255.0,
    }
}

/// Mean absolute difference of two luma planes (`b` packed, `a` with a stride).
fn mafd(a: &[u8], stride: usize, b: &[u8], w: usize, h: usize) -> f64 {
    let mut total = 0u64;
    for r in 0..h {
        let ra = &a[r * stride..r * stride + w];
        let rb = &b[r * w..(r + 1) * w];
        total += ra
            .iter()
            .zip(rb)
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum::<u64>();
    }
    total as f64 / (w * h).max(1) as f64
}

impl Accumulator {
    pub fn add(&mut self, y: &[u8], stride: usize, w: usize, h: usize) {
        let s = frame_stats(y, stride, w, h);
        self.frames += 1;
        self.black += u32::from(s.black);
        self.sharpness_sum += s.sharpness;
        self.contrast_sum += s.contrast;
        if self.frames > 1
            && self.prev_dims == (w, h)
            && mafd(y, stride, &self.prev, w, h) < FROZEN_MAFD
        {
            self.frozen += 1;
        }
        self.prev.clear();
        for r in 0..h {
            self.prev.extend_from_slice(&y[r * stride..r * stride + w]);
        }
        self.prev_dims = (w, h);
    }

    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// (black ratio, frozen ratio, sharpness, contrast)
    pub fn finish(&self) -> (f64, f64, f64, f64) {
        if self.frames == 0 {
            return (0.0, 0.0, 0.0, 0.0);
        }
        let n = f64::from(self.frames);
        let frozen = if self.frames > 1 {
            f64::from(self.frozen) / f64::from(self.frames - 1)
        } else {
            0.0
        };
        (
            f64::from(self.black) / n,
            frozen,
            self.sharpness_sum / n,
            self.contrast_sum / n,
        )
    }
}
