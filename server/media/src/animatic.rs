//! Drawing sandbox shots: palette background moved by a simulated camera, a light sweep, the shot
//! number, the wrapped description, a progress bar and a timecode.

use crate::{Animatic, CameraMove, MediaError};
use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};
use std::sync::LazyLock;
use tiny_skia::{
    Color, FillRule, GradientStop, LinearGradient, Paint, Path, PathBuilder, Pixmap, Point, Rect,
    Shader, SpreadMode, Transform,
};

static REGULAR: LazyLock<FontRef<'static>> = LazyLock::new(|| {
    FontRef::try_from_slice(dejavu::sans::regular()).expect("bundled DejaVu Sans parses")
});
static BOLD: LazyLock<FontRef<'static>> = LazyLock::new(|| {
    FontRef::try_from_slice(dejavu::sans::bold()).expect("bundled DejaVu Sans Bold parses")
});

/// Used when the palette is empty.
const DEFAULT_PALETTE: [[u8; 3]; 4] = [
    [28, 56, 110],
    [226, 114, 46],
    [242, 196, 82],
    [38, 150, 136],
];

/// Frames the sweep takes to cross the frame.
const SWEEP_FRAMES: f32 = 60.0;
/// Peak strength of the sweep.
const SWEEP_ALPHA: f32 = 0.25;

/// Longest description drawn (characters); the rest is cut with "…".
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 2000;

/// splitmix64: small deterministic generator for the layout.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
}

fn luma(c: [u8; 3]) -> f32 {
    0.2126 * f32::from(c[0]) + 0.7152 * f32::from(c[1]) + 0.0722 * f32::from(c[2])
}

fn mix(a: [u8; 3], b: [u8; 3], t: f32) -> [u8; 3] {
    let m = |x: u8, y: u8| (f32::from(x) + (f32::from(y) - f32::from(x)) * t).round() as u8;
    [m(a[0], b[0]), m(a[1], b[1]), m(a[2], b[2])]
}

fn color(c: [u8; 3], alpha: f32) -> Color {
    Color::from_rgba8(
        c[0],
        c[1],
        c[2],
        (alpha.clamp(0.0, 1.0) * 255.0).round() as u8,
    )
}

fn solid(c: [u8; 3], alpha: f32) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color(color(c, alpha));
    p.anti_alias = true;
    p
}

fn rounded_rect(x: f32, y: f32, w: f32, h: f32, r: f32) -> Option<Path> {
    let r = r.min(w / 2.0).min(h / 2.0).max(0.0);
    let k = 0.552_284_8 * r;
    let mut pb = PathBuilder::new();
    pb.move_to(x + r, y);
    pb.line_to(x + w - r, y);
    pb.cubic_to(x + w - r + k, y, x + w, y + r - k, x + w, y + r);
    pb.line_to(x + w, y + h - r);
    pb.cubic_to(x + w, y + h - r + k, x + w - r + k, y + h, x + w - r, y + h);
    pb.line_to(x + r, y + h);
    pb.cubic_to(x + r - k, y + h, x, y + h - r + k, x, y + h - r);
    pb.line_to(x, y + r);
    pb.cubic_to(x, y + r - k, x + r - k, y, x + r, y);
    pb.close();
    pb.finish()
}

/// Blends `coverage × alpha` of `rgb` into a premultiplied RGBA pixel buffer.
fn blend_px(data: &mut [u8], width: usize, height: usize, x: i32, y: i32, rgb: [u8; 3], a: f32) {
    if x < 0 || y < 0 || x as usize >= width || y as usize >= height || a <= 0.0 {
        return;
    }
    let a = a.min(1.0);
    let o = (y as usize * width + x as usize) * 4;
    let px = &mut data[o..o + 4];
    for c in 0..3 {
        px[c] = (f32::from(rgb[c]) * a + f32::from(px[c]) * (1.0 - a)).round() as u8;
    }
    px[3] = (255.0 * a + f32::from(px[3]) * (1.0 - a)).round() as u8;
}

fn text_width(font: &FontRef<'static>, px: f32, text: &str) -> f32 {
    let f = font.as_scaled(PxScale::from(px));
    let mut w = 0.0;
    let mut prev: Option<GlyphId> = None;
    for ch in text.chars() {
        let id = f.glyph_id(ch);
        if let Some(p) = prev {
            w += f.kern(p, id);
        }
        w += f.h_advance(id);
        prev = Some(id);
    }
    w
}

#[allow(clippy::too_many_arguments)]
fn draw_text(
    pix: &mut Pixmap,
    font: &FontRef<'static>,
    px: f32,
    x: f32,
    baseline: f32,
    text: &str,
    rgb: [u8; 3],
    alpha: f32,
) {
    let (w, h) = (pix.width() as usize, pix.height() as usize);
    let data = pix.data_mut();
    let f = font.as_scaled(PxScale::from(px));
    let mut caret = x;
    let mut prev: Option<GlyphId> = None;
    for ch in text.chars() {
        let id = f.glyph_id(ch);
        if let Some(p) = prev {
            caret += f.kern(p, id);
        }
        let glyph = id.with_scale_and_position(px, point(caret, baseline));
        caret += f.h_advance(id);
        prev = Some(id);
        if let Some(og) = font.outline_glyph(glyph) {
            let b = og.px_bounds();
            og.draw(|gx, gy, c| {
                blend_px(
                    data,
                    w,
                    h,
                    b.min.x as i32 + gx as i32,
                    b.min.y as i32 + gy as i32,
                    rgb,
                    c * alpha,
                );
            });
        }
    }
}

/// Greedy word wrap; words longer than a line are broken between characters.
fn wrap(font: &FontRef<'static>, px: f32, text: &str, max_w: f32) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split_whitespace() {
            let candidate = if line.is_empty() {
                word.to_string()
            } else {
                format!("{line} {word}")
            };
            if text_width(font, px, &candidate) <= max_w {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            if text_width(font, px, word) <= max_w {
                line = word.to_string();
            } else {
                for ch in word.chars() {
                    let mut next = line.clone();
                    next.push(ch);
                    if !line.is_empty() && text_width(font, px, &next) > max_w {
                        lines.push(std::mem::take(&mut line));
                        line.push(ch);
                    } else {
                        line = next;
                    }
                }
            }
        }
        lines.push(line);
    }
    while lines.last().is_some_and(|l| l.is_empty()) && lines.len() > 1 {
        lines.pop();
    }
    lines
}

/// Cleans the description: control characters become spaces, at most 2,000 characters.
fn clean_description(text: &str) -> (String, bool) {
    let mut out = String::new();
    let mut cut = false;
    for (n, ch) in text.chars().enumerate() {
        if n == MAX_DESCRIPTION_CHARS {
            cut = true;
            break;
        }
        out.push(if ch == '\n' || !ch.is_control() {
            ch
        } else {
            ' '
        });
    }
    (out.trim().to_string(), cut)
}

/// Lays out the description in at most `max_lines` lines of `max_w`, ending with "…" if cut.
fn fit_lines(
    font: &FontRef<'static>,
    px: f32,
    text: &str,
    cut: bool,
    max_w: f32,
    max_lines: usize,
) -> (Vec<String>, bool) {
    let mut lines = wrap(font, px, text, max_w);
    let mut truncated = cut;
    if lines.len() > max_lines {
        lines.truncate(max_lines.max(1));
        truncated = true;
    }
    if truncated && let Some(last) = lines.last_mut() {
        loop {
            let candidate = format!("{}…", last.trim_end());
            if text_width(font, px, &candidate) <= max_w || last.is_empty() {
                *last = candidate;
                break;
            }
            last.pop();
        }
    }
    (lines, truncated)
}

/// A glyph rasterised once (for the per-frame timecode).
struct CachedGlyph {
    cov: Vec<f32>,
    w: usize,
    h: usize,
    dx: i32,
    dy: i32,
    advance: f32,
}

fn cache_glyphs(font: &FontRef<'static>, px: f32, chars: &str) -> Vec<(char, CachedGlyph)> {
    let f = font.as_scaled(PxScale::from(px));
    chars
        .chars()
        .map(|ch| {
            let id = f.glyph_id(ch);
            let glyph = id.with_scale_and_position(px, point(0.0, 0.0));
            let mut g = CachedGlyph {
                cov: Vec::new(),
                w: 0,
                h: 0,
                dx: 0,
                dy: 0,
                advance: f.h_advance(id),
            };
            if let Some(og) = font.outline_glyph(glyph) {
                let b = og.px_bounds();
                g.w = b.width().ceil() as usize + 1;
                g.h = b.height().ceil() as usize + 1;
                g.dx = b.min.x as i32;
                g.dy = b.min.y as i32;
                g.cov = vec![0.0; g.w * g.h];
                og.draw(|x, y, c| {
                    let (x, y) = (x as usize, y as usize);
                    if x < g.w && y < g.h {
                        g.cov[y * g.w + x] = c;
                    }
                });
            }
            (ch, g)
        })
        .collect()
}

/// Runs of non-transparent pixels of an overlay: (pixel offset, premultiplied pixels).
fn runs(overlay: &Pixmap) -> Vec<(usize, Vec<[u8; 4]>)> {
    let w = overlay.width() as usize;
    let mut out = Vec::new();
    for (y, row) in overlay.data().chunks_exact(w * 4).enumerate() {
        let mut x = 0;
        while x < w {
            if row[x * 4 + 3] == 0 {
                x += 1;
                continue;
            }
            let start = x;
            let mut px = Vec::new();
            while x < w && row[x * 4 + 3] != 0 {
                px.push([row[x * 4], row[x * 4 + 1], row[x * 4 + 2], row[x * 4 + 3]]);
                x += 1;
            }
            out.push((y * w + start, px));
        }
    }
    out
}

/// Draws the opaque `src` into `dst` through `inv` (destination → source pixel coordinates),
/// bilinear, edges clamped; an integer translation is a plain copy.
fn sample_affine(
    src: &[u8],
    sw: usize,
    sh: usize,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
    inv: Transform,
) {
    let integral = |v: f32| (v - v.round()).abs() < 1e-4;
    if inv.sx == 1.0
        && inv.sy == 1.0
        && inv.kx == 0.0
        && inv.ky == 0.0
        && integral(inv.tx)
        && integral(inv.ty)
    {
        let (ox, oy) = (inv.tx.round() as i64, inv.ty.round() as i64);
        if ox >= 0 && oy >= 0 && ox as usize + dw <= sw && oy as usize + dh <= sh {
            let (ox, oy) = (ox as usize, oy as usize);
            for y in 0..dh {
                let s = ((oy + y) * sw + ox) * 4;
                dst[y * dw * 4..(y + 1) * dw * 4].copy_from_slice(&src[s..s + dw * 4]);
            }
            return;
        }
    }
    const ONE: f64 = 65536.0;
    let (a, b, c) = (f64::from(inv.sx), f64::from(inv.kx), f64::from(inv.tx));
    let (d, e, f) = (f64::from(inv.ky), f64::from(inv.sy), f64::from(inv.ty));
    let du = (a * ONE) as i64;
    let dv = (d * ONE) as i64;
    let max_x = (sw as i64 - 1).max(0);
    let max_y = (sh as i64 - 1).max(0);
    let texel = |x: i64, y: i64| -> u32 {
        let o = (y as usize * sw + x as usize) * 4;
        u32::from_le_bytes([src[o], src[o + 1], src[o + 2], src[o + 3]])
    };
    // Lerps two packed RGBA pixels by f/256 (SWAR on even and odd bytes).
    let lerp = |p: u32, q: u32, f: u32| -> u32 {
        let g = 256 - f;
        let even = ((p & 0x00ff_00ff) * g + (q & 0x00ff_00ff) * f) >> 8 & 0x00ff_00ff;
        let odd = (((p >> 8) & 0x00ff_00ff) * g + ((q >> 8) & 0x00ff_00ff) * f) & 0xff00_ff00;
        even | odd
    };
    if b == 0.0 && d == 0.0 {
        // Axis-aligned (pan, dolly, zoom): per-column taps computed once, two source rows per row.
        let cols: Vec<(usize, usize, u32)> = (0..dw)
            .map(|x| {
                let u = ((a * (x as f64 + 0.5) + c - 0.5) * ONE) as i64;
                let xi = u >> 16;
                (
                    xi.clamp(0, max_x) as usize * 4,
                    (xi + 1).clamp(0, max_x) as usize * 4,
                    ((u >> 8) & 0xff) as u32,
                )
            })
            .collect();
        let px_at =
            |row: &[u8], o: usize| u32::from_le_bytes([row[o], row[o + 1], row[o + 2], row[o + 3]]);
        for (y, row) in dst.chunks_exact_mut(dw * 4).enumerate().take(dh) {
            let v = ((e * (y as f64 + 0.5) + f - 0.5) * ONE) as i64;
            let yi = v >> 16;
            let fy = ((v >> 8) & 0xff) as u32;
            let r0 = yi.clamp(0, max_y) as usize * sw * 4;
            let r1 = (yi + 1).clamp(0, max_y) as usize * sw * 4;
            let (row0, row1) = (&src[r0..r0 + sw * 4], &src[r1..r1 + sw * 4]);
            for (px, &(o0, o1, fx)) in row.chunks_exact_mut(4).zip(&cols) {
                let top = lerp(px_at(row0, o0), px_at(row0, o1), fx);
                let bottom = lerp(px_at(row1, o0), px_at(row1, o1), fx);
                px.copy_from_slice(&lerp(top, bottom, fy).to_le_bytes());
            }
        }
        return;
    }
    // Every destination pixel samples strictly inside the source (the world is 1.5× the frame):
    // no clamping, 2×2 blocks read straight from the two source rows.
    let inside = [
        (0.0, 0.0),
        (dw as f64, 0.0),
        (0.0, dh as f64),
        (dw as f64, dh as f64),
    ]
    .iter()
    .all(|&(x, y)| {
        let u = a * x + b * y + c - 0.5;
        let v = d * x + e * y + f - 0.5;
        u >= 1.0 && v >= 1.0 && u < (sw as f64 - 2.0) && v < (sh as f64 - 2.0)
    });
    if inside {
        let stride = sw * 4;
        for (y, row) in dst.chunks_exact_mut(dw * 4).enumerate().take(dh) {
            let yc = y as f64 + 0.5;
            let mut u = ((a * 0.5 + b * yc + c - 0.5) * ONE) as i64;
            let mut v = ((d * 0.5 + e * yc + f - 0.5) * ONE) as i64;
            for px in row.chunks_exact_mut(4) {
                let o = ((v >> 16) as usize * sw + (u >> 16) as usize) * 4;
                let (fx, fy) = (((u >> 8) & 0xff) as u32, ((v >> 8) & 0xff) as u32);
                let q = &src[o..o + stride + 8];
                let p = |k: usize| u32::from_le_bytes([q[k], q[k + 1], q[k + 2], q[k + 3]]);
                let top = lerp(p(0), p(4), fx);
                let bottom = lerp(p(stride), p(stride + 4), fx);
                px.copy_from_slice(&lerp(top, bottom, fy).to_le_bytes());
                u += du;
                v += dv;
            }
        }
        return;
    }
    for (y, row) in dst.chunks_exact_mut(dw * 4).enumerate().take(dh) {
        let yc = y as f64 + 0.5;
        let mut u = ((a * 0.5 + b * yc + c - 0.5) * ONE) as i64;
        let mut v = ((d * 0.5 + e * yc + f - 0.5) * ONE) as i64;
        for px in row.chunks_exact_mut(4) {
            let (xi, yi) = (u >> 16, v >> 16);
            let (fx, fy) = (((u >> 8) & 0xff) as u32, ((v >> 8) & 0xff) as u32);
            let x0 = xi.clamp(0, max_x);
            let x1 = (xi + 1).clamp(0, max_x);
            let y0 = yi.clamp(0, max_y);
            let y1 = (yi + 1).clamp(0, max_y);
            let top = lerp(texel(x0, y0), texel(x1, y0), fx);
            let bottom = lerp(texel(x0, y1), texel(x1, y1), fx);
            px.copy_from_slice(&lerp(top, bottom, fy).to_le_bytes());
            u += du;
            v += dv;
        }
    }
}

/// Renders the frames of one animatic.
pub(crate) struct Renderer {
    w: u32,
    h: u32,
    fps: u32,
    frames: u32,
    camera: CameraMove,
    world: Pixmap,
    rings: Vec<(f32, f32, f32)>,
    /// Premultiplied overlay pixels as runs: (offset into the frame, pixels).
    overlay_runs: Vec<(usize, Vec<[u8; 4]>)>,
    frame: Pixmap,
    dark_bg: bool,
    direction: f32,
    accent: [u8; 3],
    bar: Rect,
    bar_track: [u8; 3],
    timecode_glyphs: Vec<(char, CachedGlyph)>,
    timecode_right: f32,
    timecode_baseline: f32,
}

impl Renderer {
    pub fn new(spec: &Animatic<'_>, frames: u32) -> Result<Self, MediaError> {
        let (w, h) = (spec.format.width, spec.format.height);
        let err = || MediaError::Encode(format!("cannot allocate a {w}x{h} canvas"));
        let mut rng = Rng(spec.seed ^ 0x5eed_a111_0000_0000 ^ u64::from(spec.shot_number));
        let palette: Vec<[u8; 3]> = if spec.palette.is_empty() {
            DEFAULT_PALETTE.to_vec()
        } else {
            spec.palette.iter().take(8).copied().collect()
        };
        let mean_luma = palette.iter().map(|c| luma(*c)).sum::<f32>() / palette.len() as f32;
        let dark_bg = mean_luma < 128.0;
        let (light, dark) = ([250, 250, 246], [14, 14, 18]);
        let accent = if dark_bg { light } else { dark };

        // The world: 1.5× the frame, so that pans, zooms and rotations never show an edge.
        let pad_x = (w / 4).max(2);
        let pad_y = (h / 4).max(2);
        let (ww, wh) = (w + 2 * pad_x, h + 2 * pad_y);
        let mut world = Pixmap::new(ww, wh).ok_or_else(err)?;
        let (wwf, whf) = (ww as f32, wh as f32);
        let angle = rng.range(0.0, std::f32::consts::TAU);
        let (ca, sa) = (angle.cos(), angle.sin());
        let half = 0.5 * (wwf * ca.abs() + whf * sa.abs());
        let (cx, cy) = (wwf / 2.0, whf / 2.0);
        let mut stops: Vec<GradientStop> = Vec::new();
        let base: Vec<[u8; 3]> = if palette.len() == 1 {
            let c = palette[0];
            let other = if luma(c) < 128.0 {
                mix(c, [255; 3], 0.18)
            } else {
                mix(c, [0; 3], 0.18)
            };
            vec![c, other, c]
        } else {
            palette.clone()
        };
        for (i, c) in base.iter().enumerate() {
            stops.push(GradientStop::new(
                i as f32 / (base.len() - 1) as f32,
                color(*c, 1.0),
            ));
        }
        let shader = LinearGradient::new(
            Point::from_xy(cx - ca * half, cy - sa * half),
            Point::from_xy(cx + ca * half, cy + sa * half),
            stops,
            SpreadMode::Pad,
            Transform::identity(),
        )
        .unwrap_or(Shader::SolidColor(color(palette[0], 1.0)));
        let mut paint = Paint {
            shader,
            ..Paint::default()
        };
        paint.anti_alias = false;
        world.fill_rect(
            Rect::from_xywh(0.0, 0.0, wwf, whf).ok_or_else(err)?,
            &paint,
            Transform::identity(),
            None,
        );
        // Diagonal bands of the palette colours.
        let diag = (wwf * wwf + whf * whf).sqrt();
        let band_angle = rng.range(-0.6, 0.6);
        for i in 0..6 {
            let c = palette[(i + 1) % palette.len()];
            let c = if palette.len() == 1 {
                mix(c, accent, 0.12)
            } else {
                c
            };
            let bw = whf * rng.range(0.05, 0.16);
            let pos = rng.range(-0.5, 0.5) * diag;
            let t = Transform::from_rotate_at(band_angle.to_degrees(), cx, cy);
            if let Some(r) = Rect::from_xywh(cx + pos, cy - diag, bw, 2.0 * diag) {
                world.fill_rect(r, &solid(c, rng.range(0.35, 0.6)), t, None);
            }
        }
        // Soft discs ("bokeh"), lighter on dark palettes and darker on light ones.
        let mut discs = PathBuilder::new();
        let mut disc_list = Vec::new();
        for _ in 0..12 {
            let r = whf * rng.range(0.03, 0.11);
            let x = rng.range(0.0, wwf);
            let y = rng.range(0.0, whf);
            let c = palette[(rng.next() % palette.len() as u64) as usize];
            disc_list.push((x, y, r, mix(c, accent, 0.3)));
        }
        for (x, y, r, c) in &disc_list {
            if let Some(p) = PathBuilder::from_circle(*x, *y, *r) {
                world.fill_path(
                    &p,
                    &solid(*c, 0.45),
                    FillRule::Winding,
                    Transform::identity(),
                    None,
                );
            }
        }
        // A thin grid: sharp edges that make every move visible.
        let step = (whf / 7.0).max(4.0);
        let line = (whf / 360.0).max(1.0);
        let mut gx = (cx % step) - step;
        while gx < wwf {
            if let Some(r) = Rect::from_xywh(gx, 0.0, line, whf) {
                discs.push_rect(r);
            }
            gx += step;
        }
        let mut gy = (cy % step) - step;
        while gy < whf {
            if let Some(r) = Rect::from_xywh(0.0, gy, wwf, line) {
                discs.push_rect(r);
            }
            gy += step;
        }
        if let Some(p) = discs.finish() {
            world.fill_path(
                &p,
                &solid(accent, 0.16),
                FillRule::Winding,
                Transform::identity(),
                None,
            );
        }

        // Orbital: a foreground layer of rings drifting against the rotation (parallax).
        let rings = if spec.camera == CameraMove::Orbital {
            (0..7)
                .map(|_| {
                    let r = h as f32 * rng.range(0.06, 0.13);
                    (
                        rng.range(-0.2, 1.2) * w as f32,
                        rng.range(0.0, 1.0) * h as f32,
                        r,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };

        // Static overlay: header pills and the description box.
        let s = w.min(h) as f32;
        let margin = (s * 0.05).round().max(2.0);
        let header_px = (s * 0.075).clamp(5.0, 56.0);
        let plate = if dark_bg {
            [18, 18, 22]
        } else {
            [250, 250, 246]
        };
        let plate_text = if dark_bg { light } else { dark };
        let boxc = if dark_bg {
            [246, 246, 242]
        } else {
            [16, 16, 20]
        };
        let box_text = if dark_bg {
            [16, 16, 20]
        } else {
            [250, 250, 246]
        };

        let wf = w as f32;
        let hf = h as f32;
        let bar_h = (s * 0.018).round().max(2.0);
        let timecode_px = (s * 0.05).clamp(5.0, 36.0);
        let bar = Rect::from_xywh(margin, hf - margin - bar_h, wf - 2.0 * margin, bar_h)
            .ok_or_else(err)?;
        let timecode_baseline = bar.top() - timecode_px * 0.35;
        let box_bottom = timecode_baseline - timecode_px * 1.1;
        let header_h = header_px * 1.5;
        let box_top_min = margin + header_h + margin * 0.6;

        let mut overlay = Pixmap::new(w, h).ok_or_else(err)?;
        // Shot number pill (top left) and camera pill (top right).
        let shot = format!(
            "Shot {} / {}",
            spec.shot_number,
            spec.shot_count.max(spec.shot_number)
        );
        let shot_w = text_width(&BOLD, header_px, &shot) + header_px;
        if let Some(p) = rounded_rect(
            margin,
            margin,
            shot_w.min(wf - 2.0 * margin),
            header_h,
            header_h / 2.0,
        ) {
            overlay.fill_path(
                &p,
                &solid(plate, 0.82),
                FillRule::Winding,
                Transform::identity(),
                None,
            );
        }
        let base_y = margin + header_h / 2.0 + header_px * 0.36;
        draw_text(
            &mut overlay,
            &BOLD,
            header_px,
            margin + header_px / 2.0,
            base_y,
            &shot,
            plate_text,
            1.0,
        );
        let cam = match spec.camera {
            CameraMove::Static => "STATIC",
            CameraMove::Pan => "PAN",
            CameraMove::Dolly => "DOLLY",
            CameraMove::Zoom => "ZOOM",
            CameraMove::Orbital => "ORBITAL",
        };
        let cam_px = header_px * 0.8;
        let cam_w = text_width(&REGULAR, cam_px, cam) + header_px;
        if shot_w + cam_w + 3.0 * margin <= wf {
            let x = wf - margin - cam_w;
            if let Some(p) = rounded_rect(x, margin, cam_w, header_h, header_h / 2.0) {
                overlay.fill_path(
                    &p,
                    &solid(plate, 0.82),
                    FillRule::Winding,
                    Transform::identity(),
                    None,
                );
            }
            draw_text(
                &mut overlay,
                &REGULAR,
                cam_px,
                x + header_px / 2.0,
                base_y - (header_px - cam_px) * 0.36,
                cam,
                plate_text,
                1.0,
            );
        }

        // Description box, anchored at the bottom above the timecode, as tall as its text.
        let (text, cut) = clean_description(spec.description);
        let box_x = margin;
        let box_w = wf - 2.0 * margin;
        let max_box_h = (box_bottom - box_top_min).max(4.0);
        let mut px = (s * 0.068).clamp(4.0, 44.0);
        let min_px = (s * 0.032).clamp(4.0, 22.0);
        let (lines, body_px, pad) = loop {
            let pad = (px * 0.7).max(2.0);
            let line_h = px * 1.25;
            let max_lines = (((max_box_h - 2.0 * pad) / line_h).floor() as usize).max(1);
            let (lines, truncated) =
                fit_lines(&REGULAR, px, &text, cut, box_w - 2.0 * pad, max_lines);
            if !truncated || px <= min_px {
                break (lines, px, pad);
            }
            px = (px * 0.9).max(min_px);
        };
        let line_h = body_px * 1.25;
        let text_lines = if text.is_empty() { 1 } else { lines.len() };
        let box_h = (text_lines as f32 * line_h + 2.0 * pad)
            .min(max_box_h)
            .max(line_h.min(max_box_h));
        let box_y = box_bottom - box_h;
        if let Some(p) = rounded_rect(box_x, box_y, box_w, box_h, (s * 0.025).max(1.0)) {
            overlay.fill_path(
                &p,
                &solid(boxc, 0.86),
                FillRule::Winding,
                Transform::identity(),
                None,
            );
        }
        let asc = REGULAR.as_scaled(PxScale::from(body_px)).ascent();
        for (i, l) in lines.iter().enumerate() {
            let baseline = box_y + pad + asc * 0.92 + i as f32 * line_h;
            if baseline > box_y + box_h {
                break;
            }
            draw_text(
                &mut overlay,
                &REGULAR,
                body_px,
                box_x + pad,
                baseline,
                l,
                box_text,
                1.0,
            );
        }
        // Timecode plate (the digits are drawn per frame).
        let timecode_glyphs = cache_glyphs(&BOLD, timecode_px, "0123456789:.");
        let digit_adv = timecode_glyphs
            .first()
            .map_or(timecode_px * 0.6, |(_, g)| g.advance);
        let tc_w = digit_adv * 8.0 + timecode_px * 0.8;
        let timecode_right = wf - margin - timecode_px * 0.4;
        if let Some(r) = rounded_rect(
            wf - margin - tc_w,
            timecode_baseline - timecode_px * 1.05,
            tc_w,
            timecode_px * 1.35,
            timecode_px * 0.3,
        ) {
            overlay.fill_path(
                &r,
                &solid(plate, 0.7),
                FillRule::Winding,
                Transform::identity(),
                None,
            );
        }

        let frame = Pixmap::new(w, h).ok_or_else(err)?;
        Ok(Self {
            w,
            h,
            fps: spec.format.fps,
            frames,
            camera: spec.camera,
            world,
            rings,
            overlay_runs: runs(&overlay),
            frame,
            dark_bg,
            direction: if rng.next() & 1 == 0 { 1.0 } else { -1.0 },
            accent,
            bar,
            bar_track: plate,
            timecode_glyphs,
            timecode_right,
            timecode_baseline,
        })
    }

    /// Draws frame `i` (0-based) and returns its RGBA pixels (opaque).
    pub fn render(&mut self, i: u32) -> &[u8] {
        let (wf, hf) = (self.w as f32, self.h as f32);
        let (ww, wh) = (self.world.width() as f32, self.world.height() as f32);
        let t = if self.frames > 1 {
            i as f32 / (self.frames - 1) as f32
        } else {
            0.0
        };
        let (cx, cy) = (wf / 2.0, hf / 2.0);
        // World centre onto frame centre, then the camera move about the frame centre.
        let centre = Transform::from_translate(cx - ww / 2.0, cy - wh / 2.0);
        let camera = match self.camera {
            CameraMove::Static => Transform::identity(),
            CameraMove::Pan => {
                Transform::from_translate(self.direction * 0.18 * wf * (1.0 - 2.0 * t), 0.0)
            }
            CameraMove::Dolly => {
                let k = 1.0 + 0.12 * t;
                Transform::from_scale(k, k)
            }
            CameraMove::Zoom => {
                let k = 1.0 + 0.42 * t;
                Transform::from_scale(k, k)
            }
            CameraMove::Orbital => {
                Transform::from_scale(1.06, 1.06).post_rotate(self.direction * (-7.0 + 14.0 * t))
            }
        };
        let about_centre = Transform::from_translate(-cx, -cy)
            .post_concat(camera)
            .post_translate(cx, cy);
        let world_t = centre.post_concat(about_centre);
        let inv = world_t.invert().unwrap_or_default();
        let (w, h) = (self.w as usize, self.h as usize);
        sample_affine(
            self.world.data(),
            self.world.width() as usize,
            self.world.height() as usize,
            self.frame.data_mut(),
            w,
            h,
            inv,
        );
        if !self.rings.is_empty() {
            let drift = -self.direction * 0.12 * wf * (1.0 - 2.0 * t);
            let mut pb = PathBuilder::new();
            for (x, y, r) in &self.rings {
                pb.push_circle(x + drift, *y, *r);
            }
            if let Some(p) = pb.finish() {
                self.frame.fill_path(
                    &p,
                    &solid(self.accent, 0.3),
                    FillRule::Winding,
                    Transform::identity(),
                    None,
                );
            }
        }
        // Static overlay (premultiplied, over an opaque frame).
        let data = self.frame.data_mut();
        for (offset, run) in &self.overlay_runs {
            let dst = &mut data[offset * 4..(offset + run.len()) * 4];
            for (d, s) in dst.chunks_exact_mut(4).zip(run) {
                let inv_a = 255 - u32::from(s[3]);
                for c in 0..3 {
                    let v = u32::from(d[c]) * inv_a + 128;
                    d[c] = (u32::from(s[c]) + ((v + (v >> 8)) >> 8)).min(255) as u8;
                }
            }
        }
        // The sweep: two soft vertical bands half a period apart crossing the whole picture (text
        // box included) every 60 frames (2.5 s at 24 fps; at least 1.5 px per frame), pulling each
        // pixel towards white or black, whichever is further. One band is always in view and
        // changes every pixel under it, so no frame ever repeats the previous one.
        let bw = (wf * 0.22).max(6.0);
        let travel = wf + bw;
        let step = (travel / SWEEP_FRAMES).max(1.5);
        let data = self.frame.data_mut();
        for phase in [0.0, 0.5] {
            // Position by frame index, not time: the same step per frame at any fps.
            let x0 = ((i as f32 * step) / travel + phase).fract() * travel - bw;
            let first = x0.floor().max(0.0) as usize;
            let last = ((x0 + bw).ceil().max(0.0) as usize).min(w);
            let alphas: Vec<u32> = (first..last)
                .map(|x| {
                    let d = ((x as f32 + 0.5 - x0) / bw * 2.0 - 1.0).abs();
                    ((1.0 - d).max(0.0) * SWEEP_ALPHA * 256.0) as u32
                })
                .collect();
            if alphas.is_empty() {
                continue;
            }
            for row in data.chunks_exact_mut(w * 4) {
                for (px, a) in row[first * 4..last * 4].chunks_exact_mut(4).zip(&alphas) {
                    let luma =
                        (54 * u32::from(px[0]) + 183 * u32::from(px[1]) + 19 * u32::from(px[2]))
                            >> 8;
                    let target = if luma < 128 { 255 } else { 0 };
                    for v in &mut px[..3] {
                        *v = ((u32::from(*v) * (256 - a) + target * a) >> 8) as u8;
                    }
                }
            }
        }
        // Progress bar.
        let bar = self.bar;
        let done = bar.width() * (i + 1) as f32 / self.frames.max(1) as f32;
        let (bx, by) = (bar.left().round() as usize, bar.top().round() as usize);
        let (bw_px, bh_px) = (bar.width().round() as usize, bar.height().round() as usize);
        let done_px = (done.round() as usize).clamp(1, bw_px.max(1));
        for y in by..(by + bh_px).min(h) {
            let row = &mut data[y * w * 4..(y + 1) * w * 4];
            for x in bx..(bx + bw_px).min(w) {
                let (col, a) = if x < bx + done_px {
                    (self.accent, 243u32)
                } else {
                    (self.bar_track, 140u32)
                };
                let px = &mut row[x * 4..x * 4 + 4];
                for c in 0..3 {
                    px[c] = ((u32::from(px[c]) * (256 - a) + u32::from(col[c]) * a) >> 8) as u8;
                }
            }
        }
        // Timecode mm:ss.ff
        let total_s = i / self.fps;
        let tc = format!(
            "{:02}:{:02}.{:02}",
            (total_s / 60) % 100,
            total_s % 60,
            i % self.fps
        );
        self.draw_timecode(&tc);
        self.frame.data()
    }

    fn draw_timecode(&mut self, tc: &str) {
        let (w, h) = (self.w as usize, self.h as usize);
        let glyphs: Vec<&CachedGlyph> = tc
            .chars()
            .filter_map(|c| {
                self.timecode_glyphs
                    .iter()
                    .find(|(g, _)| *g == c)
                    .map(|(_, g)| g)
            })
            .collect();
        let width: f32 = glyphs.iter().map(|g| g.advance).sum();
        let mut caret = self.timecode_right - width;
        let baseline = self.timecode_baseline.round() as i32;
        let rgb = if self.dark_bg {
            [250, 250, 246]
        } else {
            [14, 14, 18]
        };
        let data = self.frame.data_mut();
        for g in glyphs {
            let ox = caret.round() as i32 + g.dx;
            let oy = baseline + g.dy;
            for gy in 0..g.h {
                for gx in 0..g.w {
                    let c = g.cov[gy * g.w + gx];
                    if c > 0.0 {
                        blend_px(data, w, h, ox + gx as i32, oy + gy as i32, rgb, c);
                    }
                }
            }
            caret += g.advance;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_and_truncate() {
        let text = "word ".repeat(300);
        let (lines, cut) = fit_lines(&REGULAR, 10.0, text.trim(), false, 100.0, 3);
        assert!(cut);
        assert_eq!(lines.len(), 3);
        assert!(lines[2].ends_with('…'));
        for l in &lines {
            assert!(text_width(&REGULAR, 10.0, l) <= 100.0, "{l}");
        }
        let long = "x".repeat(200);
        let lines = wrap(&REGULAR, 10.0, &long, 50.0);
        assert!(lines.len() > 3);
        assert_eq!(lines.concat(), long);
        let (c, cut) = clean_description(&"é".repeat(2500));
        assert!(cut);
        assert_eq!(c.chars().count(), MAX_DESCRIPTION_CHARS);
    }
}
