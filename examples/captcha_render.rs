//! CPU cost of drawing captchas, on one thread and with no server around it, so the
//! renderer's own cost can be measured repeatably: wall time here, instruction counts under
//! callgrind (`valgrind --tool=callgrind target/release/examples/captcha_render`), where the
//! box is too noisy for time.
//!
//! ```text
//! cargo run --release --example captcha_render             # 2,000 pictures of 6 digits
//! CAPTCHA_PICTURES=200 cargo run --release --example captcha_render
//! ```

use std::time::Instant;

use recovery_service::recovery::captcha_image::render_png;

fn main() -> anyhow::Result<()> {
    let pictures: usize = std::env::var("CAPTCHA_PICTURES")
        .ok()
        .and_then(|raw| raw.parse().ok())
        .unwrap_or(2_000);
    // Fixed seeds and answers, so two builds draw (and time) the same pictures.
    let mut bytes = 0usize;
    let started = Instant::now();
    for n in 0..pictures {
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = (n as u8).wrapping_mul(31).wrapping_add(i as u8) ^ ((n >> 8) as u8);
        }
        let digits = format!("{:06}", (n * 7_919) % 1_000_000);
        bytes += render_png(&digits, seed)?.len();
    }
    let elapsed = started.elapsed();
    println!(
        "{pictures} pictures in {elapsed:?}: {:.1} µs each, {:.0}/s on one thread, {} bytes average",
        elapsed.as_secs_f64() * 1e6 / pictures as f64,
        pictures as f64 / elapsed.as_secs_f64(),
        bytes / pictures.max(1)
    );
    Ok(())
}
