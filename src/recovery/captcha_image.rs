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

    // Ink coverage in [0, 1] per pixel, glyphs first; composited over a noisy
    // background at the end so lines and glyphs share exactly the same ink
    // tone and cannot be separated by a simple threshold on colour.

    let glyphs = layout_glyphs(&glyph_ids, &mut rng);
    let warp = Warp::random(&mut rng);
    let mut coverage = draw_glyphs(&glyphs, &warp);
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
const TABLE_LEN: usize = TABLE_COLS * TABLE_ROWS;
/// A sub-cell no capsule reaches: no ink wherever a sample lands in it. Such a sub-cell's entry
/// is its clearance instead (see `GlyphStrokes::cells`), below this bound; 0 is the least.
const NO_INK: u32 = 0;
const CLEARANCE_LIMIT: u32 = 1 << 16;
/// Clearances are stored in 1/1024 cell, rounded down.
const CLEARANCE_PER_CELL: f32 = 1024.0;
/// Taken off every clearance: far above float rounding and the fixed-point index's error.
const CLEARANCE_MARGIN: f32 = 0.01;
/// A sub-cell wholly inside one capsule: ink wherever a sample lands in it.
const ALL_INK: u32 = u32::MAX;
/// Margins of the sub-cell classification, far above float rounding (~1e-6 here), so a sample
/// on a sub-cell's edge gets the answer the exact test would give.
const INSIDE_MARGIN: f32 = 0.002;
const OUTSIDE_MARGIN: f32 = 0.01;
/// How far past the grid's edge a sample row's column window (`GridMap::ink_window`) reaches:
/// ink reaches 0.05 cell past it (pen radius 0.55 around centres 0.5 inside), plus a margin far
/// above float rounding.
const INK_MARGIN: f32 = 0.1;

/// A glyph's strokes, precomputed per sample sub-cell: whether it is all ink, all paper (and
/// how far from ink), or else the capsules that can reach into it. Walking the 4x4 window of
/// grid cells and their links for every supersample (and `floorf`/`sinf` calls) was nearly all
/// of a captcha's CPU time (perf), while what a sub-cell can touch never changes. Where a
/// sample needs the capsules, the test is the same as before, so the picture is the one the
/// window walk drew, up to samples within float rounding of a stroke's edge
/// (`the_precomputed_strokes_draw_the_reference_picture`). Built once per process (~50 million
/// instructions for the ten digits).
struct GlyphStrokes {
    /// Per sample sub-cell, row-major over `TABLE_COLS`: `ALL_INK`; the capsules that can reach
    /// it as `start | end << 16` into `capsules` (`start < end`, so at least `CLEARANCE_LIMIT`);
    /// or, when none can, its clearance: how much farther than the pen radius from every stroke
    /// each of its points is, in 1/1024 cell (0 when not known to be any; always 0 in the last
    /// column and row, which stand for samples off the table). A fixed-size array, so an index
    /// clamped into the table needs no bounds check.
    cells: [u32; TABLE_LEN],
    /// Per sub-cell that lists capsules, the same split one level finer: its `FINE` x `FINE`
    /// parts, row-major, two bits each (`FINE_PAPER`, `FINE_INK` or `FINE_TEST`). Most samples
    /// that land in such a sub-cell land in a part that is wholly paper or wholly ink, so the
    /// capsules are tested for only a third or so of them.
    fine: [u32; TABLE_LEN],
    capsules: Vec<Capsule>,
}

/// Parts per side of a sub-cell in `GlyphStrokes::fine`: the next `FINE_BITS` bits of the
/// fixed-point coordinates after the sub-cell's own.
const FINE_BITS: u32 = 2;
const FINE: usize = 1 << FINE_BITS;
const FINE_PAPER: u32 = 0;
const FINE_INK: u32 = 1;
const FINE_TEST: u32 = 2;

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
        let mut cells = [NO_INK; TABLE_LEN];
        let mut fine = [FINE_PAPER; TABLE_LEN];
        let mut capsules = Vec::new();
        // Every stroke of the glyph, for the clearances: the segments between 8-connected set
        // cells, and a dot on each set cell (isolated ones have only that).
        let mut strokes = Vec::new();
        for row in 0..GLYPH_ROWS as i32 {
            for col in 0..GLYPH_COLS as i32 {
                if glyph_bit(bits, col, row) {
                    strokes.push(Capsule::new(col, row, (0, 0)));
                    for (lc, lr) in LINKS {
                        if glyph_bit(bits, col + lc, row + lr) {
                            strokes.push(Capsule::new(col, row, (lc, lr)));
                        }
                    }
                }
            }
        }
        for (slot, (cell, fine)) in cells.iter_mut().zip(&mut fine).enumerate() {
            let (col_slot, row_slot) = (slot % TABLE_COLS, slot / TABLE_COLS);
            // Grid cell (cu, cv), offset by the one-cell margin, and the sub-cell's rectangle.
            let cu = (col_slot / SUBDIV) as i32 - 1;
            let cv = (row_slot / SUBDIV) as i32 - 1;
            let step = 1.0 / SUBDIV as f32;
            let u0 = cu as f32 + (col_slot % SUBDIV) as f32 * step;
            let v0 = cv as f32 + (row_slot % SUBDIV) as f32 * step;
            let rect = (u0, v0, u0 + step, v0 + step);
            let mut all_ink = false;
            let mut reaching: Vec<Capsule> = Vec::new();
            // The same window the sampler used to walk: rows cv-2..=cv+1, cols cu-2..=cu+1.
            for row in cv - 2..=cv + 1 {
                for col in cu - 2..=cu + 1 {
                    if !glyph_bit(bits, col, row) {
                        continue;
                    }
                    let links = LINKS
                        .iter()
                        .filter(|(lc, lr)| glyph_bit(bits, col + lc, row + lr));
                    for &link in std::iter::once(&(0, 0)).chain(links) {
                        let capsule = Capsule::new(col, row, link);
                        all_ink |= capsule.covers(rect);
                        if capsule.may_reach(rect) {
                            reaching.push(capsule);
                        }
                    }
                }
            }
            if all_ink {
                *cell = ALL_INK;
                continue;
            }
            // A dot on the end of a listed segment lies inside that segment's capsule (its end
            // cap is the same disc), so testing it as well could only repeat a hit.
            let needed = reaching.iter().filter(|dot| {
                dot.inv_len_sq > 0.0
                    || !reaching.iter().any(|seg| {
                        seg.inv_len_sq > 0.0
                            && [(seg.ax, seg.ay), (seg.ax + seg.sx, seg.ay + seg.sy)]
                                .contains(&(dot.ax, dot.ay))
                    })
            });
            let start = capsules.len();
            capsules.extend(needed);
            if capsules.len() == start {
                // The last column and row stand for every sample off the table (`sample`), so
                // their clearance would be wrong (there is no ink there, the table reaching at
                // least 0.95 cell past it on every side).
                let border = col_slot == TABLE_COLS - 1 || row_slot == TABLE_ROWS - 1;
                *cell = if border {
                    NO_INK
                } else {
                    clearance(rect, &strokes)
                };
                continue;
            }
            // Classified as the sub-cells are, with the same margins.
            let part = step / FINE as f32;
            for (index, (fu, fv)) in (0..FINE * FINE).map(|i| (i % FINE, i / FINE)).enumerate() {
                let (pu, pv) = (u0 + fu as f32 * part, v0 + fv as f32 * part);
                let part_rect = (pu, pv, pu + part, pv + part);
                let class = if reaching.iter().any(|c| c.covers(part_rect)) {
                    FINE_INK
                } else if reaching.iter().any(|c| c.may_reach(part_rect)) {
                    FINE_TEST
                } else {
                    FINE_PAPER
                };
                *fine |= class << (2 * index);
            }
            // Fewer than 2^16 capsules per glyph (a few hundred); were it not so, the sub-cell
            // would read as paper (clearance 0) rather than index the wrong capsules.
            *cell = match (u16::try_from(start), u16::try_from(capsules.len())) {
                (Ok(start), Ok(end)) if start < end => u32::from(start) | u32::from(end) << 16,
                _ => NO_INK,
            };
        }
        Self {
            cells,
            fine,
            capsules,
        }
    }

    /// Whether the sample whose grid point is `column + row` is within the pen radius of a
    /// stroke, and if not, the clearance of its sub-cell (`cells`), possibly 0.
    fn sample(&self, column: &GridTerm, row: &GridTerm) -> Sample {
        // The sub-cell from the fixed-point terms: integer additions and shifts instead of two
        // saturating float-to-int conversions per sample (`>>` floors, negatives included).
        // Each term is within 2^29, so the sums cannot overflow. Samples off the table, negative
        // ones too once taken as unsigned, end in its last column or row, without a branch:
        // those sub-cells are plain `NO_INK`, no ink and no clearance (`build`).
        let (fixed_u, fixed_v) = (column.iu + row.iu, column.iv + row.iv);
        let col = ((fixed_u >> FRAC_BITS) as u32).min(TABLE_COLS as u32 - 1);
        let row_slot = ((fixed_v >> FRAC_BITS) as u32).min(TABLE_ROWS as u32 - 1);
        let slot = row_slot as usize * TABLE_COLS + col as usize;
        let cell = self.cells.get(slot).copied().unwrap_or(NO_INK);
        if cell < CLEARANCE_LIMIT {
            return Sample::Paper { clearance: cell };
        }
        if cell == ALL_INK {
            return Sample::Ink;
        }
        // The part of the sub-cell: the next bits down (two's complement keeps flooring them
        // right for negative coordinates, and such a sub-cell is never off the table).
        let part_u = (fixed_u >> (FRAC_BITS - FINE_BITS)) as u32 & (FINE as u32 - 1);
        let part_v = (fixed_v >> (FRAC_BITS - FINE_BITS)) as u32 & (FINE as u32 - 1);
        let fine = self.fine.get(slot).copied().unwrap_or(FINE_TEST);
        match (fine >> (2 * (part_v * FINE as u32 + part_u))) & 3 {
            FINE_PAPER => return Sample::Paper { clearance: NO_INK },
            FINE_INK => return Sample::Ink,
            _ => {}
        }
        let (start, end) = (cell & 0xFFFF, cell >> 16);
        let capsules = self
            .capsules
            .get(start as usize..end as usize)
            .unwrap_or_default();
        let (u, v) = (column.u + row.u, column.v + row.v);
        let ink = capsules.iter().any(|c| {
            let (du, dv) = (u - c.ax, v - c.ay);
            let t = ((du * c.sx + dv * c.sy) * c.inv_len_sq).clamp(0.0, 1.0);
            let (eu, ev) = (du - c.sx * t, dv - c.sy * t);
            eu * eu + ev * ev <= RADIUS_SQ
        });
        if ink {
            Sample::Ink
        } else {
            Sample::Paper { clearance: NO_INK }
        }
    }
}

/// How many samples after one with a given clearance have no ink either: neighbouring samples'
/// grid points are at most `stride` apart, so the `n`-th next one is within `n * stride` of it,
/// still clear of every stroke while that is below the clearance (whose `CLEARANCE_MARGIN`
/// covers float rounding in the grid points).
struct SkipRule {
    /// Samples per 1/1024 cell of clearance, times 2^16 (rounded down, so never too many).
    per_clearance: u64,
}

impl SkipRule {
    fn new(stride: f32) -> Self {
        // A tenth of a percent more, for the rounding in `stride` itself. NaN gives 0: no skips.
        let stride = stride * 1.001;
        let per_clearance = (65_536.0 / (stride * CLEARANCE_PER_CELL)).min(65_536.0);
        Self {
            per_clearance: if stride > 0.0 {
                per_clearance as u64
            } else {
                0
            },
        }
    }

    /// Samples after one with `clearance` that certainly have no ink.
    fn samples(&self, clearance: u32) -> usize {
        usize::try_from((u64::from(clearance) * self.per_clearance) >> 16).unwrap_or_default()
    }
}

/// What `GlyphStrokes::sample` found.
enum Sample {
    Ink,
    /// No ink, and none within `clearance` (in 1/1024 cell) of the sample either.
    Paper {
        clearance: u32,
    },
}

/// How much farther than the pen radius from every stroke each point
/// of `rect` is, in 1/1024 cell rounded down, less `CLEARANCE_MARGIN`; 0 if not more than that.
/// A lower bound: from the rectangle's centre, as in `Capsule::may_reach`.
fn clearance((u0, v0, u1, v1): (f32, f32, f32, f32), strokes: &[Capsule]) -> u32 {
    let (half_w, half_h) = ((u1 - u0) / 2.0, (v1 - v0) / 2.0);
    let (cu, cv) = (u0 + half_w, v0 + half_h);
    let nearest_sq = strokes
        .iter()
        .map(|c| seg_dist_sq(cu - c.ax, cv - c.ay, c.sx, c.sy))
        .fold(f32::MAX, f32::min);
    let clear =
        nearest_sq.sqrt() - (half_w * half_w + half_h * half_h).sqrt() - RADIUS - CLEARANCE_MARGIN;
    // Saturating `as`, and below `CLEARANCE_LIMIT`: a clearance of 64 cells is more than any.
    ((clear * CLEARANCE_PER_CELL).max(0.0) as u32).min(CLEARANCE_LIMIT - 1)
}

/// Fraction bits of the fixed-point sub-cell coordinates that `sample` indexes the tables with.
const FRAC_BITS: u32 = 16;
/// Grid cells to fixed-point sub-cells.
const FIXED_PER_CELL: f32 = (SUBDIV << FRAC_BITS) as f32;
/// Bound on a fixed-point term, so a column's plus a row's never overflows an `i32`. It is
/// 2048 cells, far off the table, so clamping a term changes no lookup.
const FIXED_LIMIT: f32 = (1u32 << 29) as f32;

/// A column's or a row's part of a sample's grid point `(u, v)`: as floats for the capsule
/// test, and as fixed-point sub-cells (`(u + offset) * SUBDIV * 2^FRAC_BITS`, truncated) for the
/// table index. The sum of a column's and a row's fixed-point parts is off from the exact
/// sub-cell coordinate by under 2^-14 sub-cell (two truncations plus float rounding), so it
/// picks another sub-cell than the float sum would only for points within ~10^-5 cell of a
/// sub-cell's edge; a sub-cell's entry is right that far outside it (`INSIDE_MARGIN`,
/// `OUTSIDE_MARGIN`), so the answer is the same.
#[derive(Clone, Copy, Default)]
struct GridTerm {
    u: f32,
    v: f32,
    iu: i32,
    iv: i32,
}

impl GridTerm {
    fn new((u, v): (f32, f32), offset: f32) -> Self {
        // `clamp` keeps the sum in range; `as` then cannot saturate. (NaN would give 0, but no
        // grid point is NaN: every placement and warp parameter is a finite draw.)
        let fixed =
            |x: f32| ((x + offset) * FIXED_PER_CELL).clamp(-FIXED_LIMIT, FIXED_LIMIT) as i32;
        Self {
            u,
            v,
            iu: fixed(u),
            iv: fixed(v),
        }
    }
}

impl Capsule {
    /// The dot on set cell `(col, row)` for a `link` of `(0, 0)`, else the segment from there to
    /// the neighbour `link` away.
    fn new(col: i32, row: i32, (lc, lr): (i32, i32)) -> Self {
        let (sx, sy) = (lc as f32, lr as f32);
        let len_sq = sx * sx + sy * sy;
        Self {
            ax: col as f32 + 0.5,
            ay: row as f32 + 0.5,
            sx,
            sy,
            inv_len_sq: if len_sq > 0.0 { 1.0 / len_sq } else { 0.0 },
        }
    }

    /// Conservative: false only when no point of `rect` (u0, v0, u1, v1) is within the pen
    /// radius: when their bounding boxes are apart, or when the rectangle's centre is farther
    /// from the segment than the pen radius plus the centre's distance to the corners (the
    /// distance to a segment changes no faster than the point moves).
    fn may_reach(&self, (u0, v0, u1, v1): (f32, f32, f32, f32)) -> bool {
        let reach = RADIUS + OUTSIDE_MARGIN;
        let (half_w, half_h) = ((u1 - u0) / 2.0, (v1 - v0) / 2.0);
        let centre_reach = reach + (half_w * half_w + half_h * half_h).sqrt();
        let centre_dist_sq = seg_dist_sq(
            u0 + half_w - self.ax,
            v0 + half_h - self.ay,
            self.sx,
            self.sy,
        );
        if centre_dist_sq > centre_reach * centre_reach {
            return false;
        }
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
    cells: [NO_INK; TABLE_LEN],
    fine: [FINE_PAPER; TABLE_LEN],
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

    /// The sample `x` (image coordinate, before the warp) where a sample with row part
    /// `(row_u, row_v)` can be within `INK_MARGIN` of the grid, as an open interval. The column
    /// part is `au * x + bu * shift_y(x)` (and the same for `v`) with `|shift_y| <= max_shift_y`
    /// (`|sin| <= 1`), so `u` is `au * x + row_u` give or take `|bu| * max_shift_y`: linear in
    /// `x` but for that slack.
    fn ink_window(&self, (row_u, row_v): (f32, f32), max_shift_y: f32) -> (f32, f32) {
        let (u_lo, u_hi) = linear_window(self.au, row_u, self.bu.abs() * max_shift_y, GLYPH_COLS);
        let (v_lo, v_hi) = linear_window(self.av, row_v, self.bv.abs() * max_shift_y, GLYPH_ROWS);
        (u_lo.max(v_lo), u_hi.min(v_hi))
    }
}

/// The `x` for which `a * x + c`, give or take `slack`, can be within `INK_MARGIN` of `0..cells`,
/// as an open interval (empty when its start is not below its end).
fn linear_window(a: f32, c: f32, slack: f32, cells: usize) -> (f32, f32) {
    // Need `lo < a * x < hi`.
    let lo = -INK_MARGIN - slack - c;
    let hi = cells as f32 + INK_MARGIN + slack - c;
    if a > 0.0 {
        (lo / a, hi / a)
    } else if a < 0.0 {
        (hi / a, lo / a)
    } else if lo < 0.0 && hi > 0.0 {
        (f32::MIN, f32::MAX)
    } else {
        (f32::MAX, f32::MIN)
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

/// The glyphs' ink coverage of every pixel (row-major): the share of its supersamples on ink.
fn draw_glyphs(glyphs: &[PlacedGlyph], warp: &Warp) -> Vec<f32> {
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
    let max_shift_y = warp.ay.abs();
    for glyph in glyphs {
        let map = glyph.grid_map();
        let (xs, ys) = glyph.pixel_span(warp);
        // Both samples of each pixel column, left to right, and the most any two neighbours'
        // grid points are apart.
        let columns: Vec<GridTerm> = xs
            .clone()
            .flat_map(|x| {
                let shifts = shift_y.get(x).copied().unwrap_or_default();
                [0, 1].map(|i| GridTerm::new(map.column(x as f32 + SUB[i], shifts[i]), 0.0))
            })
            .collect();
        let stride = columns
            .windows(2)
            .map(|pair| match pair {
                [a, b] => (b.u - a.u).hypot(b.v - a.v),
                _ => 0.0,
            })
            .fold(0.0f32, f32::max);
        let skip = SkipRule::new(stride);
        for y in ys {
            let (Some(row_shift), Some(masks)) = (
                shift_x.get(y),
                ink.get_mut(y * WIDTH + xs.start..y * WIDTH + xs.end),
            ) else {
                continue;
            };
            for (i, &oy) in SUB.iter().enumerate() {
                let row_part = map.row(y as f32 + oy, row_shift[i]);
                // Only the columns where this sample row can be near the glyph's grid: a third
                // or more of the pixel span is not (the warp's slack around the glyph's box, and
                // the box's rotated corners). The window is for `INK_MARGIN` (0.1 cell) while ink
                // reaches 0.05 cell past the grid; that gap dwarfs float rounding (~10^-6 cell),
                // so no sample with ink is left out. The bounds are widened by a pixel besides:
                // a pixel's samples sit a quarter pixel either side of its middle.
                let (lo, hi) = map.ink_window(row_part, max_shift_y);
                // Clamped into the span first, so truncating is flooring (and NaN gives 0).
                let span = xs.start as f32..=xs.end as f32;
                let first = ((lo - 1.0).clamp(*span.start(), *span.end()) as usize)
                    .saturating_sub(xs.start);
                let end = ((hi + 1.0).clamp(*span.start(), *span.end()) as usize)
                    .saturating_sub(xs.start);
                let row_term = GridTerm::new(row_part, 1.0);
                let left = 1u8 << (2 * i);
                // Sample `k` is pixel `k / 2`'s left (even) or right (odd) sample.
                let mut k = 2 * first;
                while k < 2 * end {
                    let Some(column) = columns.get(k) else {
                        break;
                    };
                    match glyph.strokes.sample(column, &row_term) {
                        Sample::Ink => {
                            if let Some(mask) = masks.get_mut(k / 2) {
                                *mask |= left << (k % 2);
                            }
                        }
                        Sample::Paper { clearance } => k += skip.samples(clearance),
                    }
                    k += 1;
                }
            }
        }
    }
    ink.into_iter()
        .map(|mask| mask.count_ones() as f32 / 4.0)
        .collect()
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
    // `floor(v).max(0.0) as usize`: truncating floors a non-negative value, and whatever is
    // below 0 (NaN too) ends at 0 either way. `floor` is a libm call on baseline x86-64.
    let x_lo = (cx - reach).max(0.0) as usize;
    let y_lo = (cy - reach).max(0.0) as usize;
    // A pixel's centre is within `radius + 0.5` only if `cx - radius - 1 < x < cx + radius`:
    // the left bound is that tight already, the right one (was `cx + reach`) is made so.
    let x_hi = ceil_index(cx + radius, WIDTH.saturating_sub(1));
    let y_hi = ceil_index(cy + radius, HEIGHT.saturating_sub(1));
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

/// `(value.ceil().max(0.0) as usize).min(last)` without the libm call for `ceil`: clamping
/// first changes nothing (`ceil` is monotonic and keeps the integer `last`, and maps what is
/// below 0, NaN too, to at most 0), and on `0.0..=last` truncating and adding one for a
/// fraction is exactly `ceil` (`last` is far below 2^24, so `truncated as f32` is exact).
fn ceil_index(value: f32, last: usize) -> usize {
    let value = value.max(0.0).min(last as f32);
    let truncated = value as usize;
    truncated + usize::from((truncated as f32) < value)
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
    // come first, split into two 24-bit halves, so the blending loop has no serial dependency
    // and the compiler vectorises it (64-bit lanes it would not).
    let (mut paper_bits, mut pen_bits) = ([0u32; WIDTH], [0u32; WIDTH]);
    let mut pixels = Vec::with_capacity(coverage.len());
    for row in coverage.chunks_exact(WIDTH) {
        for (paper, pen) in paper_bits.iter_mut().zip(&mut pen_bits) {
            let bits = rng.next_u64();
            (*paper, *pen) = ((bits >> 40) as u32, (bits >> 16) as u32);
        }
        let noise = paper_bits.iter().zip(&pen_bits);
        pixels.extend(
            row.iter()
                .zip(&gradient)
                .zip(noise)
                .map(|((&c, &base), (&paper, &pen))| {
                    let bg = base + range_of_bits(-14.0, 10.0, paper);
                    let fg = ink + range_of_bits(-10.0, 10.0, pen);
                    let c = c.clamp(0.0, 1.0);
                    round_to_u8(bg * (1.0 - c) + fg * c)
                }),
        );
    }
    pixels
}

/// Uniform in [lo, hi) from the low 24 bits of `bits`, as `Xoshiro256::range` maps a draw.
fn range_of_bits(lo: f32, hi: f32, bits: u32) -> f32 {
    // 24 bits fit the f32 mantissa exactly (and an i32, which converts fastest).
    let unit = ((bits & 0xFF_FFFF) as i32) as f32 / (1u32 << 24) as f32;
    lo + (hi - lo) * unit
}

/// `value.round().clamp(0.0, 255.0) as u8` (half away from zero) without the `roundf` call
/// that the baseline x86-64 target makes for `round`, and without float-to-int conversions,
/// whose saturation keeps the compiler from vectorising the loop (`as i32` and `as u8` both end
/// up scalar). Clamping first gives the same result (rounding is monotonic and keeps 0 and 255)
/// and maps NaN to 0 (`max` returns the other operand).
fn round_to_u8(value: f32) -> u8 {
    /// 2^23: from there on the spacing of `f32` values is exactly 1.
    const SNAP: f32 = 8_388_608.0;
    // Not `clamp`, which keeps NaN.
    let value = value.max(0.0);
    let value = value.min(255.0);
    // `SNAP + value` is `SNAP` plus `value` rounded to the nearest integer, ties to even (`SNAP`
    // is even), so its low byte is that integer (at most 255). Subtracting `SNAP` again is
    // exact, and so is `value - nearest` (within one half), which is exactly 0.5 only for a tie
    // rounded down: half away from zero rounds that one up (to at most 255, so still in the low
    // byte).
    let snapped = value + SNAP;
    let nearest = snapped - SNAP;
    let rounded = snapped.to_bits() + u32::from(value - nearest == 0.5);
    rounded as u8
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
                let fast = draw_glyphs(&glyphs, &warp);
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
