//! Planar YUV 4:2:0 frames: colour conversion (BT.709, limited range) and scaling.

/// An owned 4:2:0 frame with tightly packed planes (strides = width, width / 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Yuv420 {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

/// A borrowed 4:2:0 frame (e.g. a decoder's output) with arbitrary strides.
pub(crate) struct FrameRef<'a> {
    pub width: usize,
    pub height: usize,
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    pub y_stride: usize,
    pub uv_stride: usize,
}

impl Yuv420 {
    /// A black frame (limited range: Y 16, U/V 128). Width and height must be even.
    pub fn black(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            y: vec![16; width * height],
            u: vec![128; width * height / 4],
            v: vec![128; width * height / 4],
        }
    }

    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef {
            width: self.width,
            height: self.height,
            y: &self.y,
            u: &self.u,
            v: &self.v,
            y_stride: self.width,
            uv_stride: self.width / 2,
        }
    }

    /// Converts opaque RGBA (premultiplied = straight when opaque) to YUV 4:2:0, BT.709 limited
    /// range; chroma is the average of each 2×2 block.
    pub fn from_rgba(rgba: &[u8], width: usize, height: usize) -> Self {
        let mut f = Self::black(width, height);
        f.fill_from_rgba(rgba);
        f
    }

    pub fn fill_from_rgba(&mut self, rgba: &[u8]) {
        let (w, h) = (self.width, self.height);
        debug_assert_eq!(rgba.len(), w * h * 4);
        // BT.709 limited range, 8-bit fixed point (×256).
        // Y  =  16 + ( 47 R + 157 G +  16 B) / 256
        // Cb = 128 + (-26 R -  87 G + 112 B) / 256
        // Cr = 128 + (112 R - 102 G -  10 B) / 256
        for cy in 0..h / 2 {
            let row0 = &rgba[(2 * cy) * w * 4..(2 * cy + 1) * w * 4];
            let row1 = &rgba[(2 * cy + 1) * w * 4..(2 * cy + 2) * w * 4];
            let (y0, y1) = self.y[(2 * cy) * w..(2 * cy + 2) * w].split_at_mut(w);
            let urow = &mut self.u[cy * (w / 2)..(cy + 1) * (w / 2)];
            let vrow = &mut self.v[cy * (w / 2)..(cy + 1) * (w / 2)];
            for cx in 0..w / 2 {
                let mut rs = 0i32;
                let mut gs = 0i32;
                let mut bs = 0i32;
                for (row, yrow) in [(row0, &mut *y0), (row1, &mut *y1)] {
                    for dx in 0..2 {
                        let x = 2 * cx + dx;
                        let p = &row[x * 4..x * 4 + 3];
                        let (r, g, b) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
                        yrow[x] = (16 + ((47 * r + 157 * g + 16 * b + 128) >> 8)) as u8;
                        rs += r;
                        gs += g;
                        bs += b;
                    }
                }
                // Sums of 4 pixels: divide by 4 × 256.
                urow[cx] =
                    (128 + ((-26 * rs - 87 * gs + 112 * bs + 512) >> 10)).clamp(16, 240) as u8;
                vrow[cx] =
                    (128 + ((112 * rs - 102 * gs - 10 * bs + 512) >> 10)).clamp(16, 240) as u8;
            }
        }
    }
}

impl FrameRef<'_> {
    /// Copies into an owned frame with packed planes (rounding an odd size down to even).
    pub fn to_owned_even(&self) -> Yuv420 {
        let w = self.width & !1;
        let h = self.height & !1;
        let mut f = Yuv420::black(w, h);
        for r in 0..h {
            f.y[r * w..(r + 1) * w]
                .copy_from_slice(&self.y[r * self.y_stride..r * self.y_stride + w]);
        }
        for r in 0..h / 2 {
            let s = r * self.uv_stride;
            f.u[r * (w / 2)..(r + 1) * (w / 2)].copy_from_slice(&self.u[s..s + w / 2]);
            f.v[r * (w / 2)..(r + 1) * (w / 2)].copy_from_slice(&self.v[s..s + w / 2]);
        }
        f
    }

    /// Converts to packed RGB (BT.709 limited range), full resolution with nearest chroma.
    pub fn to_rgb(&self) -> Vec<u8> {
        let (w, h) = (self.width, self.height);
        let mut out = vec![0u8; w * h * 3];
        for r in 0..h {
            let yrow = &self.y[r * self.y_stride..];
            let crow = (r / 2) * self.uv_stride;
            for (c, &yv) in yrow[..w].iter().enumerate() {
                let y = (i32::from(yv) - 16) * 298; // 255/219 × 256
                let u = i32::from(self.u[crow + c / 2]) - 128;
                let v = i32::from(self.v[crow + c / 2]) - 128;
                // BT.709: R = Y + 1.793 Cr, G = Y − 0.213 Cb − 0.533 Cr, B = Y + 2.112 Cb
                // (coefficients × 255/224, × 256).
                let rr = (y + 459 * v + 128) >> 8;
                let gg = (y - 55 * u - 136 * v + 128) >> 8;
                let bb = (y + 541 * u + 128) >> 8;
                let o = (r * w + c) * 3;
                out[o] = rr.clamp(0, 255) as u8;
                out[o + 1] = gg.clamp(0, 255) as u8;
                out[o + 2] = bb.clamp(0, 255) as u8;
            }
        }
        out
    }
}

/// Separable resampling filter taps: for each output index, the first input index and weights
/// (fixed point, summing to 1 << 14). Triangle filter widened when downscaling (area-like).
#[derive(Clone, Debug)]
struct Taps {
    starts: Vec<usize>,
    len: usize,
    weights: Vec<i32>,
}

const WEIGHT_BITS: u32 = 14;

impl Taps {
    fn new(src: usize, dst: usize) -> Self {
        let scale = dst as f64 / src as f64;
        let support = if scale < 1.0 { 1.0 / scale } else { 1.0 };
        let len = (2.0 * support).ceil() as usize + 1;
        let mut starts = Vec::with_capacity(dst);
        let mut weights = Vec::with_capacity(dst * len);
        for i in 0..dst {
            let center = (i as f64 + 0.5) / scale - 0.5;
            let first = (center - support).floor() as i64 + 1;
            let mut w = vec![0f64; len];
            let mut idx = vec![0usize; len];
            for k in 0..len {
                let x = first + k as i64;
                let d = (x as f64 - center).abs() / support;
                w[k] = (1.0 - d).max(0.0);
                idx[k] = x.clamp(0, src as i64 - 1) as usize;
            }
            // Fold clamped indices into a contiguous window starting at `start`.
            let start = idx[0].min(src.saturating_sub(len));
            let mut folded = vec![0f64; len];
            for k in 0..len {
                let j = (idx[k] - start).min(len - 1);
                folded[j] += w[k];
            }
            let sum: f64 = folded.iter().sum();
            let mut fixed: Vec<i32> = folded
                .iter()
                .map(|v| (v / sum * f64::from(1 << WEIGHT_BITS)).round() as i32)
                .collect();
            let err = (1 << WEIGHT_BITS) - fixed.iter().sum::<i32>();
            let (imax, _) = fixed
                .iter()
                .enumerate()
                .max_by_key(|(_, v)| **v)
                .unwrap_or((0, &0));
            fixed[imax] += err;
            starts.push(start);
            weights.extend_from_slice(&fixed);
        }
        Self {
            starts,
            len,
            weights,
        }
    }
}

/// Scales one plane: `src` (w×h, stride) into `dst` (dw×dh, stride `dst_stride`).
struct PlaneScaler {
    sw: usize,
    sh: usize,
    dw: usize,
    dh: usize,
    h: Taps,
    v: Taps,
}

impl PlaneScaler {
    fn new(sw: usize, sh: usize, dw: usize, dh: usize) -> Self {
        let len_ok = |n: usize| n.max(1);
        Self {
            sw,
            sh,
            dw,
            dh,
            h: Taps::new(len_ok(sw), len_ok(dw)),
            v: Taps::new(len_ok(sh), len_ok(dh)),
        }
    }

    fn run(&self, src: &[u8], stride: usize, dst: &mut [u8], dst_stride: usize, tmp: &mut Vec<u8>) {
        let (sw, sh, dw, dh) = (self.sw, self.sh, self.dw, self.dh);
        if sw == dw && sh == dh {
            for r in 0..dh {
                dst[r * dst_stride..r * dst_stride + dw]
                    .copy_from_slice(&src[r * stride..r * stride + sw]);
            }
            return;
        }
        // Horizontal pass: sh rows × dw.
        tmp.clear();
        tmp.resize(sh * dw, 0);
        let hl = self.h.len.min(sw);
        for r in 0..sh {
            let srow = &src[r * stride..r * stride + sw];
            let trow = &mut tmp[r * dw..(r + 1) * dw];
            for (x, t) in trow.iter_mut().enumerate() {
                let s = self.h.starts[x];
                let w = &self.h.weights[x * self.h.len..x * self.h.len + hl];
                let mut acc = 1 << (WEIGHT_BITS - 1);
                for (k, wk) in w.iter().enumerate() {
                    acc += i32::from(srow[s + k]) * wk;
                }
                *t = (acc >> WEIGHT_BITS).clamp(0, 255) as u8;
            }
        }
        // Vertical pass.
        let vl = self.v.len.min(sh);
        let mut acc_row = vec![0i32; dw];
        for y in 0..dh {
            let s = self.v.starts[y];
            let w = &self.v.weights[y * self.v.len..y * self.v.len + vl];
            acc_row.fill(1 << (WEIGHT_BITS - 1));
            for (k, wk) in w.iter().enumerate() {
                if *wk == 0 {
                    continue;
                }
                let trow = &tmp[(s + k) * dw..(s + k + 1) * dw];
                for (a, t) in acc_row.iter_mut().zip(trow) {
                    *a += i32::from(*t) * wk;
                }
            }
            let drow = &mut dst[y * dst_stride..y * dst_stride + dw];
            for (d, a) in drow.iter_mut().zip(&acc_row) {
                *d = (a >> WEIGHT_BITS).clamp(0, 255) as u8;
            }
        }
    }
}

/// Where a `sw × sh` picture lands inside a `dw × dh` frame when fitted with bars:
/// `(x, y, w, h)`, all even.
pub(crate) fn fit_rect(sw: usize, sh: usize, dw: usize, dh: usize) -> (usize, usize, usize, usize) {
    if sw == 0 || sh == 0 {
        return (0, 0, dw, dh);
    }
    // Compare aspect ratios exactly: sw/sh vs dw/dh.
    let (w, h) = if (sw as u128) * (dh as u128) >= (dw as u128) * (sh as u128) {
        // Wider than the target: full width, bars top and bottom.
        let h = ((dw as u128 * sh as u128 + sw as u128 / 2) / sw as u128) as usize;
        (dw, h)
    } else {
        let w = ((dh as u128 * sw as u128 + sh as u128 / 2) / sh as u128) as usize;
        (w, dh)
    };
    let w = (w & !1).clamp(2, dw);
    let h = (h & !1).clamp(2, dh);
    let x = ((dw - w) / 2) & !1;
    let y = ((dh - h) / 2) & !1;
    (x, y, w, h)
}

/// Scales decoded frames of one size into a target size with black bars (letterbox/pillarbox).
pub(crate) struct Fitter {
    src: (usize, usize),
    dst: (usize, usize),
    rect: (usize, usize, usize, usize),
    luma: PlaneScaler,
    chroma: PlaneScaler,
    tmp: Vec<u8>,
}

impl Fitter {
    pub fn new(sw: usize, sh: usize, dw: usize, dh: usize) -> Self {
        let rect = fit_rect(sw, sh, dw, dh);
        let (_, _, w, h) = rect;
        Self {
            src: (sw, sh),
            dst: (dw, dh),
            rect,
            luma: PlaneScaler::new(sw, sh, w, h),
            chroma: PlaneScaler::new(sw.div_ceil(2), sh.div_ceil(2), w / 2, h / 2),
            tmp: Vec::new(),
        }
    }

    pub fn matches(&self, sw: usize, sh: usize) -> bool {
        self.src == (sw, sh)
    }

    /// Writes `frame` fitted into `out` (which must be `dst` sized).
    pub fn fit(&mut self, frame: &FrameRef<'_>, out: &mut Yuv420) {
        let (dw, dh) = self.dst;
        debug_assert_eq!((out.width, out.height), (dw, dh));
        let (x, y, w, h) = self.rect;
        if (w, h) != (dw, dh) {
            out.y.fill(16);
            out.u.fill(128);
            out.v.fill(128);
        }
        let off = y * dw + x;
        self.luma.run(
            frame.y,
            frame.y_stride,
            &mut out.y[off..],
            dw,
            &mut self.tmp,
        );
        let coff = (y / 2) * (dw / 2) + x / 2;
        self.chroma.run(
            frame.u,
            frame.uv_stride,
            &mut out.u[coff..],
            dw / 2,
            &mut self.tmp,
        );
        self.chroma.run(
            frame.v,
            frame.uv_stride,
            &mut out.v[coff..],
            dw / 2,
            &mut self.tmp,
        );
    }
}

/// Scales an RGB image (packed) to `dw × dh` with the same filter as the frames.
pub(crate) fn scale_rgb(rgb: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<u8> {
    if (sw, sh) == (dw, dh) {
        return rgb.to_vec();
    }
    let scaler = PlaneScaler::new(sw, sh, dw, dh);
    let mut out = vec![0u8; dw * dh * 3];
    let mut plane = vec![0u8; sw * sh];
    let mut scaled = vec![0u8; dw * dh];
    let mut tmp = Vec::new();
    for c in 0..3 {
        for (p, px) in plane.iter_mut().zip(rgb.chunks_exact(3)) {
            *p = px[c];
        }
        scaler.run(&plane, sw, &mut scaled, dw, &mut tmp);
        for (px, s) in out.chunks_exact_mut(3).zip(&scaled) {
            px[c] = *s;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_rect_letterboxes_and_pillarboxes() {
        assert_eq!(fit_rect(320, 240, 256, 144), (32, 0, 192, 144));
        assert_eq!(fit_rect(1280, 720, 256, 144), (0, 0, 256, 144));
        assert_eq!(fit_rect(1280, 720, 256, 256), (0, 56, 256, 144));
    }

    #[test]
    fn scaling_keeps_flat_colours_and_identity() {
        let taps = Taps::new(100, 37);
        for x in 0..37 {
            let w = &taps.weights[x * taps.len..(x + 1) * taps.len];
            assert_eq!(w.iter().sum::<i32>(), 1 << WEIGHT_BITS);
        }
        let src = vec![77u8; 50 * 30];
        let s = PlaneScaler::new(50, 30, 17, 9);
        let mut dst = vec![0u8; 17 * 9];
        s.run(&src, 50, &mut dst, 17, &mut Vec::new());
        assert!(dst.iter().all(|v| *v == 77));
        let s = PlaneScaler::new(7, 5, 31, 23);
        let mut dst = vec![0u8; 31 * 23];
        s.run(&[200u8; 35], 7, &mut dst, 31, &mut Vec::new());
        assert!(dst.iter().all(|v| *v == 200));
    }

    #[test]
    fn colour_round_trip_is_close() {
        let mut rgba = Vec::new();
        for (r, g, b) in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (30, 120, 200)] {
            for _ in 0..4 {
                rgba.extend_from_slice(&[r, g, b, 255]);
            }
        }
        // 4 colours × 4 pixels as an 8×2 image: each 2×2 block is one colour.
        let mut img = vec![0u8; 8 * 2 * 4];
        for blk in 0..4 {
            for dy in 0..2 {
                for dx in 0..2 {
                    let o = (dy * 8 + blk * 2 + dx) * 4;
                    img[o..o + 4].copy_from_slice(&rgba[blk * 16..blk * 16 + 4]);
                }
            }
        }
        let f = Yuv420::from_rgba(&img, 8, 2);
        let rgb = f.as_ref().to_rgb();
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            let o = i * 4;
            for c in 0..3 {
                assert!(
                    (i32::from(px[c]) - i32::from(img[o + c])).abs() <= 3,
                    "{i} {px:?}"
                );
            }
        }
        let black = Yuv420::from_rgba(&[0, 0, 0, 255].repeat(4), 2, 2);
        assert_eq!(black, Yuv420::black(2, 2));
    }
}
