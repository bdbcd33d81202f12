//! Renders a numeric captcha answer into a distorted grayscale PNG.
//!
//! Self-contained on purpose: the `captcha` crate has no declared license and
//! drags in `image`, while all we need is a digit font, a few distortions and
//! a PNG encoder.
//!
//! Security model: the *answer* is chosen by the caller from the OS CSPRNG;
//! this module only has to make automated reading expensive while keeping it
//! easy for a person. The PRNG below therefore only needs to be deterministic
//! (so tests can pin output), not cryptographically strong.

use std::f32::consts::PI;

/// Image size. Wide enough for 6 digits at full size (8 fit at a smaller
/// scale); short enough to embed inline in an email or web form.
const WIDTH: usize = 200;
const HEIGHT: usize = 70;

/// Longest answer we accept; beyond this the glyphs get too small to read.
const MAX_DIGITS: usize = 8;

/// Glyph grid: 7 columns x 11 rows, one `u8` per row, bit 6 = leftmost column.
/// A taller-than-wide grid keeps 1/7 and 3/8 distinguishable after warping.
const GLYPH_COLS: usize = 7;
const GLYPH_ROWS: usize = 11;

#[rustfmt::skip]
const GLYPHS: [[u8; GLYPH_ROWS]; 10] = [
    // 0
    [0b0011100, 0b0100010, 0b1000001, 0b1000001, 0b1000001, 0b1000001,
     0b1000001, 0b1000001, 0b1000001, 0b0100010, 0b0011100],
    // 1 (flag + base so it does not read as a stray line)
    [0b0001000, 0b0011000, 0b0101000, 0b0001000, 0b0001000, 0b0001000,
     0b0001000, 0b0001000, 0b0001000, 0b0001000, 0b0111110],
    // 2
    [0b0011100, 0b0100010, 0b1000001, 0b0000001, 0b0000010, 0b0000100,
     0b0001000, 0b0010000, 0b0100000, 0b1000000, 0b1111111],
    // 3
    [0b0111110, 0b1000001, 0b0000001, 0b0000001, 0b0000010, 0b0011100,
     0b0000010, 0b0000001, 0b0000001, 0b1000001, 0b0111110],
    // 4 (open top: the closed-triangle form reads as 9 or A once warped)
    [0b0010000, 0b0010000, 0b0100010, 0b0100010, 0b1000010, 0b1000010,
     0b1111111, 0b0000010, 0b0000010, 0b0000010, 0b0000010],
    // 5
    [0b1111111, 0b1000000, 0b1000000, 0b1000000, 0b1111110, 0b0000001,
     0b0000001, 0b0000001, 0b0000001, 0b1000001, 0b0111110],
    // 6
    [0b0011110, 0b0100000, 0b1000000, 0b1000000, 0b1011110, 0b1100001,
     0b1000001, 0b1000001, 0b1000001, 0b0100010, 0b0011100],
    // 7 (long vertical tail so it stays distinct from 1 under rotation)
    [0b1111111, 0b0000001, 0b0000010, 0b0000010, 0b0000100, 0b0000100,
     0b0001000, 0b0001000, 0b0010000, 0b0010000, 0b0010000],
    // 8
    [0b0111110, 0b1000001, 0b1000001, 0b1000001, 0b0100010, 0b0011100,
     0b0100010, 0b1000001, 0b1000001, 0b1000001, 0b0111110],
    // 9
    [0b0011100, 0b0100010, 0b1000001, 0b1000001, 0b1000001, 0b0100001,
     0b0011111, 0b0000001, 0b0000001, 0b0000010, 0b0111100],
];

/// Renders `digits` (ASCII '0'..='9' only, 1..=8 of them) as a distorted PNG.
/// `seed` drives all the randomness of the distortion (callers pass 32 bytes from the OS CSPRNG);
/// same digits + same seed => same bytes (deterministic, testable).
pub fn render_png(digits: &str, seed: [u8; 32]) -> Result<Vec<u8>, CaptchaImageError> {
    let glyph_ids = parse_digits(digits)?;
    let mut rng = Xoshiro256::from_seed(seed);

    // Ink coverage in [0, 1] per pixel; composited over a noisy background
    // at the end so lines and glyphs share exactly the same ink tone and
    // cannot be separated by a simple threshold on colour.
    let mut coverage = vec![0.0f32; WIDTH * HEIGHT];

    let glyphs = layout_glyphs(&glyph_ids, &mut rng);
    let warp = Warp::random(&mut rng);
    draw_glyphs(&mut coverage, &glyphs, &warp);
    draw_clutter_lines(&mut coverage, &mut rng);
    sprinkle_dots(&mut coverage, &mut rng);

    let pixels = composite(&coverage, &mut rng);
    encode_png(&pixels)
}

#[derive(Debug, thiserror::Error)]
pub enum CaptchaImageError {
    #[error("captcha text must be 1-8 ASCII digits")]
    InvalidText,
    #[error("png encoding failed: {0}")]
    Encode(String),
}

/// The digits as indices into `GLYPHS`.
fn parse_digits(digits: &str) -> Result<Vec<usize>, CaptchaImageError> {
    let bytes = digits.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_DIGITS {
        return Err(CaptchaImageError::InvalidText);
    }
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_digit() {
                Ok(usize::from(b - b'0'))
            } else {
                Err(CaptchaImageError::InvalidText)
            }
        })
        .collect()
}

/// xoshiro256**: tiny, fast, and good enough statistically for visual noise.
/// Deliberately not a CSPRNG (see module docs).
struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    fn from_seed(seed: [u8; 32]) -> Self {
        // Run every seed word through splitmix64 so that low-entropy test
        // seeds (e.g. all zeros, which is a fixed point of raw xoshiro)
        // still produce a well-mixed state.
        let mut s = [0u64; 4];
        let mut acc = 0u64;
        for (word, chunk) in s.iter_mut().zip(seed.chunks_exact(8)) {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(chunk);
            acc = acc.wrapping_add(u64::from_le_bytes(buf));
            *word = splitmix64(&mut acc);
        }
        Self { s }
    }

    fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = self.s;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s1 << 17;
        let mut n2 = s2 ^ s0;
        let mut n3 = s3 ^ s1;
        let n1 = s1 ^ n2;
        let n0 = s0 ^ n3;
        n2 ^= t;
        n3 = n3.rotate_left(45);
        self.s = [n0, n1, n2, n3];
        result
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        // 24 random bits fit the f32 mantissa exactly. Through u32: converting a u64 to f32
        // takes a branchy sequence on x86-64; the value is the same.
        ((self.next_u64() >> 40) as u32) as f32 / (1u32 << 24) as f32
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [0, n); returns 0 for n == 0.
    fn below(&mut self, n: usize) -> usize {
        let n64 = n as u64;
        if n64 == 0 {
            return 0;
        }
        // Modulo bias is irrelevant for visual noise.
        (self.next_u64() % n64) as usize
    }

    fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One placed glyph, stored as the inverse transform (image -> glyph grid)
/// because rendering samples backwards from output pixels; that way the
/// rotated/sheared glyph has no holes.
struct PlacedGlyph {
    /// Index into `GLYPHS`.
    #[cfg_attr(not(test), allow(dead_code))]
    digit: usize,
    strokes: &'static GlyphStrokes,
    cx: f32,
    cy: f32,
    cos: f32,
    sin: f32,
    shear: f32,
    inv_sx: f32,
    inv_sy: f32,
    /// Squared radius outside which the glyph cannot have ink (the reference sampler's reject).
    #[cfg_attr(not(test), allow(dead_code))]
    reach_sq: f32,
}

fn layout_glyphs(glyph_ids: &[usize], rng: &mut Xoshiro256) -> Vec<PlacedGlyph> {
    let n = glyph_ids.len().max(1) as f32;
    let margin = 10.0;
    // The inked part of a glyph is ~7.1 cells wide (pen radius included); a
    // pitch of 8.2 cells leaves a gap so small that rotation, shear and warp
    // make neighbours touch now and then. Glyphs that never touch can be
    // split by looking for empty columns, the first step of most
    // off-the-shelf OCR pipelines; real overlap, however, quickly makes
    // digits unreadable for people.
    let base_scale = ((WIDTH as f32 - 2.0 * margin) / n / 8.2).min(3.6);
    let pitch = base_scale * 8.2;
    let text_width = pitch * n;
    let mut x = (WIDTH as f32 - text_width) / 2.0 + pitch / 2.0 + rng.range(-4.0, 4.0);

    let mut out = Vec::with_capacity(glyph_ids.len());
    for &digit in glyph_ids {
        let sx = base_scale * rng.range(0.94, 1.04);
        let sy = base_scale * rng.range(1.1, 1.2);
        let angle = rng.range(-0.12, 0.12);
        let shear = rng.range(-0.1, 0.1);
        // Independent vertical jitter per glyph breaks the common baseline
        // that segmenters use to normalise characters.
        let cy = HEIGHT as f32 / 2.0 + rng.range(-5.0, 5.0);
        let cx = x + rng.range(-1.5, 1.5);
        let half_w = GLYPH_COLS as f32 * sx / 2.0;
        let half_h = GLYPH_ROWS as f32 * sy / 2.0;
        let reach = (half_w * half_w + half_h * half_h).sqrt() * 1.3 + sx;
        out.push(PlacedGlyph {
            digit,
            strokes: strokes_of(digit),
            cx,
            cy,
            cos: angle.cos(),
            sin: angle.sin(),
            shear,
            inv_sx: 1.0 / sx,
            inv_sy: 1.0 / sy,
            reach_sq: reach * reach,
        });
        x += pitch;
    }
    out
}

/// Pen radius of a glyph stroke, in grid cells.
const RADIUS: f32 = 0.55;
const RADIUS_SQ: f32 = RADIUS * RADIUS;
/// Forward neighbours only, so each segment between 8-connected set cells is listed once.
const LINKS: [(i32, i32); 4] = [(1, 0), (0, 1), (1, 1), (-1, 1)];

/// One piece of pen stroke in glyph-grid units: a dot on a set cell's centre (`sx == sy == 0`)
/// or the segment from it to an 8-connected set neighbour. Strokes are these capsules rather
/// than filled squares: diagonal strokes stay continuous (in the grid they only touch at
/// corners) and every stroke has the same pen width, which reads like handwriting instead of a
/// blocky bitmap.
#[derive(Clone, Copy)]
struct Capsule {
    ax: f32,
    ay: f32,
    sx: f32,
    sy: f32,
    /// `1 / (sx² + sy²)`, 0 for a dot. The squared length is 1 or 2, so multiplying by this is
    /// exactly the division `seg_dist_sq` does, without a division per sample; a dot's `t` is 0.
    inv_len_sq: f32,
}

/// Sample cells `floor(u), floor(v)` that can have ink: one column and row of margin around the
/// grid, the pen radius being below one cell. Each cell is split into `SUBDIV` x `SUBDIV`
/// sub-cells, so most sub-cells are either all ink, all paper, or near one or two capsules.
const SUBDIV: usize = 4;
const TABLE_COLS: usize = (GLYPH_COLS + 3) * SUBDIV;
const TABLE_ROWS: usize = (GLYPH_ROWS + 3) * SUBDIV;
/// A sub-cell wholly inside one capsule: ink wherever a sample lands in it.
const ALL_INK: (u16, u16) = (u16::MAX, u16::MAX);
/// Margins of the sub-cell classification, far above float rounding (~1e-6 here), so a sample
/// on a sub-cell's edge gets the answer the exact test would give.
const INSIDE_MARGIN: f32 = 0.002;
const OUTSIDE_MARGIN: f32 = 0.01;
/// How far past the grid's edge a sample is still looked up: ink reaches 0.05 cell past it
/// (pen radius 0.55 around centres 0.5 inside), plus a margin far above float rounding.
const INK_MARGIN: f32 = 0.1;

/// A glyph's strokes, precomputed per sample sub-cell: whether it is all ink, or else the
/// capsules that can reach into it. Rendering tests ~56,000 supersamples against the glyphs;
/// walking the 4x4 window of grid cells and their links for each (and `floorf`/`sinf` calls)
/// was nearly all of a captcha's CPU time (perf), while what a sub-cell can touch never changes.
/// The per-sample test is the same as before, so the picture is the one the window walk drew,
/// up to samples within float rounding of a stroke's edge
/// (`the_precomputed_strokes_draw_the_reference_picture`).
struct GlyphStrokes {
    /// `(start, end)` into `capsules` per sample sub-cell, row-major over `TABLE_COLS`, or
    /// `ALL_INK`.
    cells: Vec<(u16, u16)>,
    capsules: Vec<Capsule>,
}

fn glyph_bit(bits: &[u8; GLYPH_ROWS], col: i32, row: i32) -> bool {
    let (Ok(col), Ok(row)) = (usize::try_from(col), usize::try_from(row)) else {
        return false;
    };
    if col >= GLYPH_COLS {
        return false;
    }
    bits.get(row)
        .is_some_and(|bits| (bits >> (GLYPH_COLS - 1 - col)) & 1 == 1)
}

impl GlyphStrokes {
    fn build(bits: &[u8; GLYPH_ROWS]) -> Self {
        let mut cells = vec![(0u16, 0u16); TABLE_COLS * TABLE_ROWS];
        let mut capsules = Vec::new();
        for (slot, cell) in cells.iter_mut().enumerate() {
            let (col_slot, row_slot) = (slot % TABLE_COLS, slot / TABLE_COLS);
            // Grid cell (cu, cv), offset by the one-cell margin, and the sub-cell's rectangle.
            let cu = (col_slot / SUBDIV) as i32 - 1;
            let cv = (row_slot / SUBDIV) as i32 - 1;
            let step = 1.0 / SUBDIV as f32;
            let u0 = cu as f32 + (col_slot % SUBDIV) as f32 * step;
            let v0 = cv as f32 + (row_slot % SUBDIV) as f32 * step;
            let rect = (u0, v0, u0 + step, v0 + step);
            let start = capsules.len();
            let mut all_ink = false;
            // The same window the sampler used to walk: rows cv-2..=cv+1, cols cu-2..=cu+1.
            for row in cv - 2..=cv + 1 {
                for col in cu - 2..=cu + 1 {
                    if !glyph_bit(bits, col, row) {
                        continue;
                    }
                    let (ax, ay) = (col as f32 + 0.5, row as f32 + 0.5);
                    let links = LINKS
                        .iter()
                        .filter(|(lc, lr)| glyph_bit(bits, col + lc, row + lr))
                        .map(|&(lc, lr)| (lc as f32, lr as f32));
                    for (sx, sy) in std::iter::once((0.0, 0.0)).chain(links) {
                        let len_sq: f32 = sx * sx + sy * sy;
                        let inv_len_sq = if len_sq > 0.0 { 1.0 / len_sq } else { 0.0 };
                        let capsule = Capsule {
                            ax,
                            ay,
                            sx,
                            sy,
                            inv_len_sq,
                        };
                        all_ink |= capsule.covers(rect);
                        if capsule.may_reach(rect) {
                            capsules.push(capsule);
                        }
                    }
                }
            }
            if all_ink {
                capsules.truncate(start);
                *cell = ALL_INK;
            } else {
                *cell = (
                    u16::try_from(start).unwrap_or(0),
                    u16::try_from(capsules.len()).unwrap_or(0),
                );
            }
        }
        Self { cells, capsules }
    }

    /// Whether the grid point `(u, v)` is within the pen radius of a stroke.
    fn ink_at(&self, u: f32, v: f32) -> bool {
        // Ink lies within the pen radius (0.55) of the outer cell centres (0.5 from the edges),
        // so nothing outside the grid widened by 0.05 cell can have any. A third or more of the
        // samples a glyph visits are out there (the warp's slack around its box); four
        // comparisons turn them away before the table lookup. Also false for NaN.
        if !(u > -INK_MARGIN
            && u < GLYPH_COLS as f32 + INK_MARGIN
            && v > -INK_MARGIN
            && v < GLYPH_ROWS as f32 + INK_MARGIN)
        {
            return false;
        }
        // Both positive now (u, v > -0.1).
        let fu = (u + 1.0) * SUBDIV as f32;
        let fv = (v + 1.0) * SUBDIV as f32;
        // Through i32: `f32 as usize` is a long saturating sequence on x86-64, and this runs
        // for every supersample. Huge values saturate and fail the bound check below.
        let (col, row) = (fu as i32 as usize, fv as i32 as usize);
        if col >= TABLE_COLS || row >= TABLE_ROWS {
            return false;
        }
        let Some(&cell) = self.cells.get(row * TABLE_COLS + col) else {
            return false;
        };
        if cell == ALL_INK {
            return true;
        }
        let capsules = self
            .capsules
            .get(usize::from(cell.0)..usize::from(cell.1))
            .unwrap_or_default();
        capsules.iter().any(|c| {
            let (du, dv) = (u - c.ax, v - c.ay);
            let t = ((du * c.sx + dv * c.sy) * c.inv_len_sq).clamp(0.0, 1.0);
            let (eu, ev) = (du - c.sx * t, dv - c.sy * t);
            eu * eu + ev * ev <= RADIUS_SQ
        })
    }
}

impl Capsule {
    /// Conservative: false only when no point of `rect` (u0, v0, u1, v1) is within the pen
    /// radius (bounding boxes).
    fn may_reach(&self, (u0, v0, u1, v1): (f32, f32, f32, f32)) -> bool {
        let reach = RADIUS + OUTSIDE_MARGIN;
        let (x0, x1) = (
            self.ax.min(self.ax + self.sx),
            self.ax.max(self.ax + self.sx),
        );
        let (y0, y1) = (
            self.ay.min(self.ay + self.sy),
            self.ay.max(self.ay + self.sy),
        );
        x0 - reach <= u1 && x1 + reach >= u0 && y0 - reach <= v1 && y1 + reach >= v0
    }

    /// Every point of `rect` is within the pen radius. A capsule is convex, so its four corners
    /// being inside (with a margin) is enough.
    fn covers(&self, (u0, v0, u1, v1): (f32, f32, f32, f32)) -> bool {
        let inner = RADIUS - INSIDE_MARGIN;
        [(u0, v0), (u1, v0), (u0, v1), (u1, v1)]
            .iter()
            .all(|&(u, v)| seg_dist_sq(u - self.ax, v - self.ay, self.sx, self.sy) <= inner * inner)
    }
}

/// The strokes of digit `digit` (0-9), the ten tables built once per process.
fn strokes_of(digit: usize) -> &'static GlyphStrokes {
    static TABLES: std::sync::OnceLock<Vec<GlyphStrokes>> = std::sync::OnceLock::new();
    let tables = TABLES.get_or_init(|| GLYPHS.iter().map(GlyphStrokes::build).collect());
    // `digit` comes from `parse_digits`, so it is always in range.
    tables.get(digit).unwrap_or(&EMPTY_STROKES)
}

static EMPTY_STROKES: GlyphStrokes = GlyphStrokes {
    cells: Vec::new(),
    capsules: Vec::new(),
};

/// `to_grid` as one affine map of the warped sample `(wx, wy)`: `u = au*wx + bu*wy + cu`, same
/// for `v`. With `wx = x + shift_x(y)` and `wy = y + shift_y(x)` it splits into a term of the
/// column and a term of the row. (Summed in another order than `to_grid`, so a sample within
/// float rounding of a stroke's edge may land on the other side: see the reference test.)
struct GridMap {
    au: f32,
    bu: f32,
    cu: f32,
    av: f32,
    bv: f32,
    cv: f32,
}

impl GridMap {
    /// The column's part of `(u, v)` for a sample at `x` shifted vertically by `shift_y`.
    fn column(&self, x: f32, shift_y: f32) -> (f32, f32) {
        (
            self.au * x + self.bu * shift_y,
            self.av * x + self.bv * shift_y,
        )
    }

    /// The row's part of `(u, v)` (constants included) for a sample at `y` shifted by `shift_x`.
    fn row(&self, y: f32, shift_x: f32) -> (f32, f32) {
        (
            self.au * shift_x + self.bu * y + self.cu,
            self.av * shift_x + self.bv * y + self.cv,
        )
    }
}

impl PlacedGlyph {
    fn grid_map(&self) -> GridMap {
        // Expanding `to_grid`: rotate by -angle, unshear, scale, recentre.
        let au = self.inv_sx * (self.cos + self.shear * self.sin);
        let bu = self.inv_sx * (self.sin - self.shear * self.cos);
        let av = -self.inv_sy * self.sin;
        let bv = self.inv_sy * self.cos;
        GridMap {
            au,
            bu,
            cu: GLYPH_COLS as f32 / 2.0 - au * self.cx - bu * self.cy,
            av,
            bv,
            cv: GLYPH_ROWS as f32 / 2.0 - av * self.cx - bv * self.cy,
        }
    }

    /// The pixels whose (warped) samples can land on this glyph's ink: the image-space box of
    /// the glyph grid (ink reaches at most the pen radius past the outer cell centres, so 0.1
    /// cell of margin covers it), widened by the warp's amplitude and one pixel.
    fn pixel_span(&self, warp: &Warp) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let corners = [
            (-0.1, -0.1),
            (GLYPH_COLS as f32 + 0.1, -0.1),
            (-0.1, GLYPH_ROWS as f32 + 0.1),
            (GLYPH_COLS as f32 + 0.1, GLYPH_ROWS as f32 + 0.1),
        ];
        let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for (u, v) in corners {
            // The forward placement: the inverse of `to_grid`.
            let ry = (v - GLYPH_ROWS as f32 / 2.0) / self.inv_sy;
            let rx = (u - GLYPH_COLS as f32 / 2.0) / self.inv_sx + self.shear * ry;
            let x = self.cx + rx * self.cos - ry * self.sin;
            let y = self.cy + rx * self.sin + ry * self.cos;
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        let (wx, wy) = (warp.ax.abs() + 1.0, warp.ay.abs() + 1.0);
        let clamp = |value: f32, limit: usize| (value.max(0.0) as usize).min(limit);
        (
            clamp((x0 - wx).floor(), WIDTH)..clamp((x1 + wx).ceil() + 1.0, WIDTH),
            clamp((y0 - wy).floor(), HEIGHT)..clamp((y1 + wy).ceil() + 1.0, HEIGHT),
        )
    }

    /// Maps an image-space point into the glyph grid, or `None` when it is out of reach.
    #[cfg(test)]
    fn to_grid(&self, px: f32, py: f32) -> Option<(f32, f32)> {
        let dx = px - self.cx;
        let dy = py - self.cy;
        if dx * dx + dy * dy > self.reach_sq {
            return None;
        }
        // Inverse of the forward placement (scale, shear, rotate), so the
        // per-glyph distortion is a single cheap affine map per sample.
        let rx = dx * self.cos + dy * self.sin;
        let ry = -dx * self.sin + dy * self.cos;
        let ux = rx - self.shear * ry;
        let u = ux * self.inv_sx + GLYPH_COLS as f32 / 2.0;
        let v = ry * self.inv_sy + GLYPH_ROWS as f32 / 2.0;
        Some((u, v))
    }
}

/// Squared distance from point `(px, py)` to the segment from the origin to `(sx, sy)`.
fn seg_dist_sq(px: f32, py: f32, sx: f32, sy: f32) -> f32 {
    let len_sq = sx * sx + sy * sy;
    let t = if len_sq > 0.0 {
        ((px * sx + py * sy) / len_sq).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (ex, ey) = (px - sx * t, py - sy * t);
    ex * ex + ey * ey
}

/// Smooth whole-image displacement. Bending the text baseline and strokes
/// continuously defeats template matching against a known font and makes
/// per-glyph affine normalisation insufficient.
struct Warp {
    ax: f32,
    fx: f32,
    px: f32,
    ay: f32,
    fy: f32,
    py: f32,
}

impl Warp {
    fn random(rng: &mut Xoshiro256) -> Self {
        Self {
            ax: rng.range(1.0, 2.5),
            fx: 2.0 * PI / rng.range(30.0, 55.0),
            px: rng.range(0.0, 2.0 * PI),
            ay: rng.range(2.0, 3.5),
            fy: 2.0 * PI / rng.range(60.0, 110.0),
            py: rng.range(0.0, 2.0 * PI),
        }
    }

    /// Horizontal displacement of a sample at height `y`.
    fn shift_x(&self, y: f32) -> f32 {
        self.ax * (y * self.fx + self.px).sin()
    }

    /// Vertical displacement of a sample at `x`.
    fn shift_y(&self, x: f32) -> f32 {
        self.ay * (x * self.fy + self.py).sin()
    }
}

/// 2x2 supersampling: anti-aliased edges read far better for humans and remove the crisp
/// pixel staircase that makes bitmap fonts trivial to match.
const SUB: [f32; 2] = [0.25, 0.75];

fn draw_glyphs(coverage: &mut [f32], glyphs: &[PlacedGlyph], warp: &Warp) {
    // The warp's x shift depends only on the sample's y and its y shift only on the sample's x:
    // two small tables instead of two `sin` per supersample.
    let shift_x: Vec<[f32; 2]> = (0..HEIGHT)
        .map(|y| SUB.map(|oy| warp.shift_x(y as f32 + oy)))
        .collect();
    let shift_y: Vec<[f32; 2]> = (0..WIDTH)
        .map(|x| SUB.map(|ox| warp.shift_y(x as f32 + ox)))
        .collect();
    // One bit per supersample that lands on any glyph's ink. Each glyph only visits the pixels
    // whose warped samples can reach its ink, instead of every sample testing every glyph, and
    // its grid coordinates, affine in the warped sample, split into a per-column and a per-row
    // term: one addition per coordinate and sample.
    let mut ink = vec![0u8; WIDTH * HEIGHT];
    for glyph in glyphs {
        let map = glyph.grid_map();
        let (xs, ys) = glyph.pixel_span(warp);
        let columns: Vec<[(f32, f32); 2]> = xs
            .clone()
            .map(|x| {
                let shifts = shift_y.get(x).copied().unwrap_or_default();
                [0, 1].map(|i| map.column(x as f32 + SUB[i], shifts[i]))
            })
            .collect();
        // A sample row whose `v = col_v + row_v` is off the grid for every column has no ink
        // (`ink_at`'s first test; rounded addition is monotonic, so the extremes decide).
        let (col_v_min, col_v_max) = columns
            .iter()
            .flatten()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &(_, v)| {
                (lo.min(v), hi.max(v))
            });
        let on_grid = |row_v: f32| {
            row_v + col_v_max > -INK_MARGIN && row_v + col_v_min < GLYPH_ROWS as f32 + INK_MARGIN
        };
        for y in ys {
            let (Some(row_shift), Some(row)) =
                (shift_x.get(y), ink.get_mut(y * WIDTH..(y + 1) * WIDTH))
            else {
                continue;
            };
            let [(ru0, rv0), (ru1, rv1)] = [0, 1].map(|i| map.row(y as f32 + SUB[i], row_shift[i]));
            let (live0, live1) = (on_grid(rv0), on_grid(rv1));
            if !live0 && !live1 {
                continue;
            }
            let Some(masks) = row.get_mut(xs.clone()) else {
                continue;
            };
            // Written out rather than as loops over the 2x2 samples: this is the hot loop.
            for (mask, &[(cu0, cv0), (cu1, cv1)]) in masks.iter_mut().zip(&columns) {
                let mut m = *mask;
                if live0 {
                    if m & 1 == 0 && glyph.strokes.ink_at(cu0 + ru0, cv0 + rv0) {
                        m |= 1;
                    }
                    if m & 2 == 0 && glyph.strokes.ink_at(cu1 + ru0, cv1 + rv0) {
                        m |= 2;
                    }
                }
                if live1 {
                    if m & 4 == 0 && glyph.strokes.ink_at(cu0 + ru1, cv0 + rv1) {
                        m |= 4;
                    }
                    if m & 8 == 0 && glyph.strokes.ink_at(cu1 + ru1, cv1 + rv1) {
                        m |= 8;
                    }
                }
                *mask = m;
            }
        }
    }
    for (cell, mask) in coverage.iter_mut().zip(ink) {
        let hits = mask.count_ones() as u8;
        *cell = cell.max(f32::from(hits) / 4.0);
    }
}

/// Lines and arcs in the same ink as the digits that cross several glyphs:
/// they join neighbouring characters into one connected blob, so
/// connected-component segmentation fails. Kept thinner than the glyph
/// strokes so a human still sees them as "not part of the digit".
fn draw_clutter_lines(coverage: &mut [f32], rng: &mut Xoshiro256) {
    let count = 2 + rng.below(2);
    for _ in 0..count {
        let x0 = rng.range(0.0, 50.0);
        let x1 = rng.range(WIDTH as f32 - 50.0, WIDTH as f32);
        let y0 = rng.range(15.0, HEIGHT as f32 - 15.0);
        let y1 = rng.range(15.0, HEIGHT as f32 - 15.0);
        let (x0, x1) = if rng.coin() { (x0, x1) } else { (x1, x0) };
        // Zero bulge gives a straight line, otherwise an arc-ish curve.
        let bulge = if rng.below(3) == 0 {
            0.0
        } else {
            rng.range(-15.0, 15.0)
        };
        let wobble_amp = rng.range(0.0, 3.0);
        let wobble_freq = rng.range(2.0, 6.0);
        let wobble_phase = rng.range(0.0, 2.0 * PI);
        let radius = rng.range(0.5, 0.8);

        let (dx, dy) = (x1 - x0, y1 - y0);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let (nx, ny) = (-dy / len, dx / len);
        let steps = (len * 2.0) as usize;
        for step in 0..=steps {
            let t = step as f32 / steps.max(1) as f32;
            let off = bulge * (PI * t).sin()
                + wobble_amp * (2.0 * PI * wobble_freq * t + wobble_phase).sin();
            stamp_disc(
                coverage,
                x0 + dx * t + nx * off,
                y0 + dy * t + ny * off,
                radius,
                1.0,
            );
        }
    }
}

/// Adds an anti-aliased disc; `ink` of 1.0 darkens, 0.0 paints background.
fn stamp_disc(coverage: &mut [f32], cx: f32, cy: f32, radius: f32, ink: f32) {
    let reach = radius + 1.0;
    let x_lo = (cx - reach).floor().max(0.0) as usize;
    let y_lo = (cy - reach).floor().max(0.0) as usize;
    // A pixel's centre is within `radius + 0.5` only if `cx - radius - 1 < x < cx + radius`:
    // the left bound is that tight already, the right one (was `cx + reach`) is made so.
    let x_hi = ((cx + radius).ceil().max(0.0) as usize).min(WIDTH.saturating_sub(1));
    let y_hi = ((cy + radius).ceil().max(0.0) as usize).min(HEIGHT.saturating_sub(1));
    // Pixels at or beyond `radius + 0.5` get no ink; skipping them by their squared distance
    // saves most of the square roots. The bound is a little generous so float rounding never
    // skips a pixel the exact test would have inked.
    let edge = radius + 0.5;
    let skip_sq = edge * edge * 1.0001;
    for y in y_lo..=y_hi {
        let ddy = y as f32 + 0.5 - cy;
        for x in x_lo..=x_hi {
            let ddx = x as f32 + 0.5 - cx;
            let dist_sq = ddx * ddx + ddy * ddy;
            if dist_sq >= skip_sq {
                continue;
            }
            let a = (edge - dist_sq.sqrt()).clamp(0.0, 1.0);
            if a <= 0.0 {
                continue;
            }
            if let Some(cell) = coverage.get_mut(y * WIDTH + x) {
                *cell = *cell * (1.0 - a) + ink * a;
            }
        }
    }
}

/// Speckle both ways: dark dots add false stroke fragments, light dots punch
/// holes into strokes. Both break clean binarisation; humans integrate over
/// them without noticing.
fn sprinkle_dots(coverage: &mut [f32], rng: &mut Xoshiro256) {
    let count = 140 + rng.below(60);
    for _ in 0..count {
        let x = rng.range(0.0, WIDTH as f32);
        let y = rng.range(0.0, HEIGHT as f32);
        let radius = rng.range(0.3, 0.9);
        let ink = if rng.below(3) == 0 {
            0.0
        } else {
            rng.range(0.5, 1.0)
        };
        stamp_disc(coverage, x, y, radius, ink);
    }
}

/// Turns coverage into gray levels over a noisy, slightly graded background,
/// so there is no single background value to subtract.
fn composite(coverage: &[f32], rng: &mut Xoshiro256) -> Vec<u8> {
    let bg_left = rng.range(220.0, 245.0);
    let bg_right = rng.range(220.0, 245.0);
    let ink = rng.range(20.0, 60.0);
    // The gradient depends on the column only: one table instead of a division per pixel.
    let mut gradient = [0.0f32; WIDTH];
    for (x, base) in gradient.iter_mut().enumerate() {
        *base = bg_left + (bg_right - bg_left) * (x as f32 / WIDTH as f32);
    }
    // One 64-bit draw per pixel feeds both noises, the background's from its top 24 bits and
    // the ink's from the next 24 (every output bit of xoshiro256** is equally good): the same
    // uniform, independent noise as two draws gave, at half the generator steps. A row's draws
    // come first, so the blending loop has no serial dependency and the compiler can vectorise it.
    let mut noise = [0u64; WIDTH];
    let mut pixels = vec![0u8; coverage.len()];
    for (row, out) in coverage
        .chunks_exact(WIDTH)
        .zip(pixels.chunks_exact_mut(WIDTH))
    {
        for bits in &mut noise {
            *bits = rng.next_u64();
        }
        for (((&c, &base), &bits), pixel) in row.iter().zip(&gradient).zip(&noise).zip(out) {
            let bg = base + range_of_bits(-14.0, 10.0, bits >> 40);
            let fg = ink + range_of_bits(-10.0, 10.0, bits >> 16);
            let c = c.clamp(0.0, 1.0);
            *pixel = round_to_u8(bg * (1.0 - c) + fg * c);
        }
    }
    pixels
}

/// Uniform in [lo, hi) from the low 24 bits of `bits`, as `Xoshiro256::range` maps a draw.
fn range_of_bits(lo: f32, hi: f32, bits: u64) -> f32 {
    // 24 bits fit the f32 mantissa exactly (and an i32, which converts fastest).
    let unit = ((bits & 0xFF_FFFF) as i32) as f32 / (1u32 << 24) as f32;
    lo + (hi - lo) * unit
}

/// `value.round().clamp(0.0, 255.0) as u8` (half away from zero) without the `roundf` call
/// that the baseline x86-64 target makes for `round`: below 2^23 the fraction `value -
/// trunc(value)` is exact, so comparing it with one half rounds exactly as `round` does.
/// Negative values and NaN end at 0, as before.
fn round_to_u8(value: f32) -> u8 {
    // `as` saturates (NaN gives 0); gray levels are far inside i32.
    let truncated = value as i32;
    let rounded = if value - truncated as f32 >= 0.5 {
        truncated.saturating_add(1)
    } else {
        truncated
    };
    rounded.clamp(0, 255) as u8
}

fn encode_png(pixels: &[u8]) -> Result<Vec<u8>, CaptchaImageError> {
    let enc_err = |e: png::EncodingError| CaptchaImageError::Encode(e.to_string());
    let mut out = Vec::with_capacity(16 * 1024);
    {
        let mut encoder = png::Encoder::new(&mut out, WIDTH as u32, HEIGHT as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(enc_err)?;
        writer.write_image_data(pixels).map_err(enc_err)?;
        writer.finish().map_err(enc_err)?;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

    fn seed(n: u8) -> [u8; 32] {
        let mut s = [0u8; 32];
        for (i, b) in s.iter_mut().enumerate() {
            *b = n.wrapping_mul(31).wrapping_add(i as u8);
        }
        s
    }

    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    /// The sampler as it was before the stroke tables: walks the 4x4 window of grid cells
    /// around each sample and their links. Kept to prove the tables draw the same picture.
    fn reference_ink_at(glyph: &PlacedGlyph, px: f32, py: f32) -> bool {
        let Some((u, v)) = glyph.to_grid(px, py) else {
            return false;
        };
        let cu = u.floor() as i32;
        let cv = v.floor() as i32;
        for row in cv.saturating_sub(2)..=cv.saturating_add(1) {
            for col in cu.saturating_sub(2)..=cu.saturating_add(1) {
                let bits = &GLYPHS[glyph.digit];
                if !glyph_bit(bits, col, row) {
                    continue;
                }
                let (ax, ay) = (col as f32 + 0.5, row as f32 + 0.5);
                let (du, dv) = (u - ax, v - ay);
                if du * du + dv * dv <= RADIUS_SQ {
                    return true;
                }
                for (lc, lr) in LINKS {
                    if glyph_bit(bits, col.saturating_add(lc), row.saturating_add(lr))
                        && seg_dist_sq(du, dv, lc as f32, lr as f32) <= RADIUS_SQ
                    {
                        return true;
                    }
                }
            }
        }
        false
    }

    fn reference_glyph_coverage(glyphs: &[PlacedGlyph], warp: &Warp) -> Vec<f32> {
        let mut coverage = vec![0.0f32; WIDTH * HEIGHT];
        for (idx, cell) in coverage.iter_mut().enumerate() {
            let x = (idx % WIDTH) as f32;
            let y = (idx / WIDTH) as f32;
            let mut hits = 0u8;
            for &oy in &SUB {
                for &ox in &SUB {
                    let (sx, sy) = (x + ox, y + oy);
                    let (wx, wy) = (sx + warp.shift_x(sy), sy + warp.shift_y(sx));
                    if glyphs.iter().any(|g| reference_ink_at(g, wx, wy)) {
                        hits += 1;
                    }
                }
            }
            *cell = f32::from(hits) / 4.0;
        }
        coverage
    }

    #[test]
    fn the_precomputed_strokes_draw_the_reference_picture() {
        let mut samples = 0usize;
        let mut differing = 0usize;
        for (n, digits) in ["0123456789", "482915", "11177", "88", "3"]
            .iter()
            .enumerate()
        {
            for variant in 0..8u8 {
                let ids = parse_digits(&digits[..digits.len().min(MAX_DIGITS)]).unwrap();
                let mut rng =
                    Xoshiro256::from_seed(seed(variant.wrapping_mul(13).wrapping_add(n as u8)));
                let glyphs = layout_glyphs(&ids, &mut rng);
                let warp = Warp::random(&mut rng);
                let mut fast = vec![0.0f32; WIDTH * HEIGHT];
                draw_glyphs(&mut fast, &glyphs, &warp);
                let reference = reference_glyph_coverage(&glyphs, &warp);
                assert!(fast.iter().any(|&c| c > 0.0), "no ink for {digits}");
                for (a, b) in fast.iter().zip(&reference) {
                    // Coverage counts 4 supersamples: a difference of k quarters is k samples.
                    differing += ((a - b).abs() * 4.0).round() as usize;
                }
                samples += 4 * WIDTH * HEIGHT;
            }
        }
        // Only samples within float rounding of a stroke's edge may differ: a handful in the
        // 2.2 million drawn here, invisible in the picture.
        assert!(
            differing * 20_000 <= samples,
            "{differing} of {samples} supersamples differ from the reference"
        );
    }

    #[test]
    fn round_to_u8_rounds_like_round_and_clamp() {
        let mut value = -300.0f32;
        while value < 300.0 {
            for v in [value, value + 0.5, -value] {
                assert_eq!(round_to_u8(v), v.round().clamp(0.0, 255.0) as u8, "{v}");
            }
            value += 0.0007;
        }
        for v in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.5,
            254.5,
            255.5,
            -0.5,
        ] {
            assert_eq!(round_to_u8(v), v.round().clamp(0.0, 255.0) as u8, "{v}");
        }
    }

    /// `stamp_disc` as it was before its bounds were tightened and far pixels skipped early.
    fn reference_stamp_disc(coverage: &mut [f32], cx: f32, cy: f32, radius: f32, ink: f32) {
        let reach = radius + 1.0;
        let x_lo = (cx - reach).floor().max(0.0) as usize;
        let y_lo = (cy - reach).floor().max(0.0) as usize;
        let x_hi = ((cx + reach).ceil().max(0.0) as usize).min(WIDTH - 1);
        let y_hi = ((cy + reach).ceil().max(0.0) as usize).min(HEIGHT - 1);
        for y in y_lo..=y_hi {
            for x in x_lo..=x_hi {
                let ddx = x as f32 + 0.5 - cx;
                let ddy = y as f32 + 0.5 - cy;
                let a = (radius + 0.5 - (ddx * ddx + ddy * ddy).sqrt()).clamp(0.0, 1.0);
                if a <= 0.0 {
                    continue;
                }
                let cell = &mut coverage[y * WIDTH + x];
                *cell = *cell * (1.0 - a) + ink * a;
            }
        }
    }

    #[test]
    fn stamped_discs_are_the_reference_discs() {
        let mut rng = Xoshiro256::from_seed(seed(9));
        let mut fast = vec![0.0f32; WIDTH * HEIGHT];
        let mut reference = fast.clone();
        for n in 0..20_000 {
            let (cx, cy) = (rng.range(-3.0, 203.0), rng.range(-3.0, 73.0));
            // Now and then exactly on a pixel edge or centre, where rounding would show.
            let (cx, cy) = match n % 4 {
                0 => (cx.round(), cy.round()),
                1 => (cx.floor() + 0.5, cy.floor() + 0.5),
                _ => (cx, cy),
            };
            let radius = rng.range(0.3, 0.9);
            let ink = rng.unit();
            stamp_disc(&mut fast, cx, cy, radius, ink);
            reference_stamp_disc(&mut reference, cx, cy, radius, ink);
        }
        assert!(fast.iter().any(|&c| c > 0.0));
        assert!(fast == reference, "the discs differ from the reference");
    }

    #[test]
    fn background_and_ink_noise_keep_their_ranges() {
        // Paper is 220-245 plus noise in [-14, 10); ink 20-60 plus noise in [-10, 10).
        let mut rng = Xoshiro256::from_seed(seed(5));
        let paper = composite(&vec![0.0; WIDTH * HEIGHT], &mut rng);
        let ink = composite(&vec![1.0; WIDTH * HEIGHT], &mut rng);
        assert!(paper.iter().all(|&p| (206..=255).contains(&p)));
        assert!(ink.iter().all(|&p| (10..=70).contains(&p)));
        // Noise, not a flat tone: many distinct levels in each.
        for pixels in [&paper, &ink] {
            let mut levels = [false; 256];
            for &p in pixels.iter() {
                levels[usize::from(p)] = true;
            }
            assert!(levels.iter().filter(|&&l| l).count() > 15);
        }
    }

    #[test]
    fn produces_decodable_png_of_expected_size() {
        for digits in ["0", "123456", "98765", "01234567"] {
            let bytes = render_png(digits, seed(7)).unwrap();
            assert!(bytes.starts_with(&PNG_SIGNATURE));
            let (w, h, pixels) = decode(&bytes);
            assert_eq!((w as usize, h as usize), (WIDTH, HEIGHT));
            assert_eq!(pixels.len(), WIDTH * HEIGHT);
        }
    }

    #[test]
    fn image_contains_dark_ink_and_light_background() {
        let (_, _, pixels) = decode(&render_png("482913", seed(3)).unwrap());
        let dark = pixels.iter().filter(|&&p| p < 100).count();
        let light = pixels.iter().filter(|&&p| p > 180).count();
        // Digits plus clutter should cover a noticeable but minor share.
        assert!(dark > pixels.len() / 20, "too little ink: {dark}");
        assert!(light > pixels.len() / 2, "too little background: {light}");
    }

    #[test]
    fn same_seed_is_deterministic() {
        let a = render_png("5071", seed(1)).unwrap();
        let b = render_png("5071", seed(1)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn different_seeds_differ() {
        let a = render_png("5071", seed(1)).unwrap();
        let b = render_png("5071", seed(2)).unwrap();
        assert_ne!(a, b);
        // A single flipped seed bit must also change the picture.
        let mut s = seed(1);
        s[31] ^= 1;
        assert_ne!(a, render_png("5071", s).unwrap());
    }

    #[test]
    fn different_digits_differ() {
        assert_ne!(
            render_png("111111", seed(4)).unwrap(),
            render_png("777777", seed(4)).unwrap()
        );
    }

    #[test]
    fn all_zero_seed_works() {
        let bytes = render_png("000000", [0u8; 32]).unwrap();
        assert!(bytes.starts_with(&PNG_SIGNATURE));
    }

    #[test]
    fn rejects_invalid_text() {
        for bad in [
            "",
            "123456789",
            "12a45",
            " 1234",
            "12-34",
            "١٢٣",
            "12 34",
            "\u{0}",
        ] {
            assert!(
                matches!(
                    render_png(bad, seed(0)),
                    Err(CaptchaImageError::InvalidText)
                ),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn accepts_boundary_lengths() {
        assert!(render_png("9", seed(0)).is_ok());
        assert!(render_png("12345678", seed(0)).is_ok());
    }
}
