//! Procedural game-like clips: the training and evaluation data of the nano model.
//!
//! A clip is a side-on 2-D scene in the demo game's style: a dark sky, far hills and mid-ground
//! blocks that scroll with parallax, a brown ground strip, a golden door, the green player
//! square and sometimes a ball. A few named [`Action`]s drive it with simple physics (velocity,
//! gravity, bounces with restitution, camera pans); the prompt names them in words. Everything
//! is a function of the seed, so a clip is reproducible anywhere; [`is_held_out`] reserves one
//! seed in ten for evaluation.

use candle_core::{Device, Tensor};

use framepack::Result;
use framepack::generator::NoiseRng;

/// What happens in a clip. Every action has a word (or two) for prompts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The player walks to the left.
    WalkLeft,
    /// The player walks to the right.
    WalkRight,
    /// The player jumps in place and lands.
    Jump,
    /// A ball drops in and bounces, losing height each time.
    Bounce,
    /// The camera pans to the left (the scene slides right, far layers slower).
    PanLeft,
    /// The camera pans to the right.
    PanRight,
    /// Nothing moves.
    Idle,
}

impl Action {
    /// Every action, in a fixed order.
    pub const ALL: [Action; 7] = [
        Action::WalkLeft,
        Action::WalkRight,
        Action::Jump,
        Action::Bounce,
        Action::PanLeft,
        Action::PanRight,
        Action::Idle,
    ];

    /// The phrase a prompt uses for the action.
    pub fn phrase(self) -> &'static str {
        match self {
            Action::WalkLeft => "the green square walks left",
            Action::WalkRight => "the green square walks right",
            Action::Jump => "the green square jumps",
            Action::Bounce => "a ball bounces",
            Action::PanLeft => "the camera pans left",
            Action::PanRight => "the camera pans right",
            Action::Idle => "the scene is still",
        }
    }

    fn moves_player(self) -> bool {
        matches!(self, Action::WalkLeft | Action::WalkRight | Action::Jump)
    }

    fn moves_camera(self) -> bool {
        matches!(self, Action::PanLeft | Action::PanRight)
    }
}

/// Size and length of generated clips.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipConfig {
    /// Frame width in pixels.
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
    /// Frames per clip.
    pub frames: usize,
    /// Frames per second (sets the physics step).
    pub fps: f32,
}

impl Default for ClipConfig {
    /// 64 × 64 at 30 fps, 73 frames (two FramePack sections of 9 latents after the start frame).
    fn default() -> Self {
        Self { width: 64, height: 64, frames: 73, fps: 30.0 }
    }
}

/// One generated clip: RGB8 frames, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Clip {
    /// The seed it was made from.
    pub seed: u64,
    /// The actions shown, in prompt order.
    pub actions: Vec<Action>,
    /// The actions in words, joined with commas.
    pub prompt: String,
    /// Frame width.
    pub width: usize,
    /// Frame height.
    pub height: usize,
    /// `frames × height × width × 3` bytes.
    pub frames: Vec<Vec<u8>>,
}

impl Clip {
    /// The frames as `(1, 3, T, H, W)` f32 in `[-1, 1]`, the VAE's input layout.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let (t, h, w) = (self.frames.len(), self.height, self.width);
        let mut v = vec![0f32; 3 * t * h * w];
        for (ti, frame) in self.frames.iter().enumerate() {
            for (p, px) in frame.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    v[(c * t + ti) * h * w + p] = px[c] as f32 / 127.5 - 1.0;
                }
            }
        }
        Ok(Tensor::from_vec(v, (1, 3, t, h, w), device)?)
    }
}

/// Whether `seed` belongs to the held-out evaluation set (one seed in ten, scattered).
pub fn is_held_out(seed: u64) -> bool {
    NoiseRng::new(seed ^ 0x4845_4c44_4f55_5400).next_u64().is_multiple_of(10)
}

/// The first `n` training seeds (held-out ones skipped).
pub fn training_seeds(n: usize) -> impl Iterator<Item = u64> {
    (0u64..).filter(|&s| !is_held_out(s)).take(n)
}

/// The first `n` held-out seeds.
pub fn held_out_seeds(n: usize) -> impl Iterator<Item = u64> {
    (0u64..).filter(|&s| is_held_out(s)).take(n)
}

/// The clip of `seed`: one player or ball action, sometimes with a camera pan, drawn from the seed.
pub fn clip(seed: u64, cfg: &ClipConfig) -> Result<Clip> {
    let mut rng = NoiseRng::new(seed ^ 0x4143_5449_4f4e_5300);
    let subjects = [Action::WalkLeft, Action::WalkRight, Action::Jump, Action::Bounce, Action::Idle];
    let mut actions = vec![subjects[(rng.next_u64() % subjects.len() as u64) as usize]];
    match rng.next_u64() % 4 {
        0 => actions.push(Action::PanLeft),
        1 => actions.push(Action::PanRight),
        _ => {}
    }
    if actions.len() > 1 && actions[0] == Action::Idle {
        actions.remove(0);
    }
    clip_with(seed, &actions, cfg)
}

/// A clip of `seed`'s scene showing exactly `actions` (at most one player action, one camera
/// action and one ball).
pub fn clip_with(seed: u64, actions: &[Action], cfg: &ClipConfig) -> Result<Clip> {
    if cfg.width < 16 || cfg.height < 16 || cfg.frames == 0 || !cfg.fps.is_finite() || cfg.fps <= 0.0 {
        return Err(crate::invalid("clip config", format!("{cfg:?}: need at least 16 × 16 px, 1 frame, fps > 0")));
    }
    if actions.iter().filter(|a| a.moves_player()).count() > 1
        || actions.iter().filter(|a| a.moves_camera()).count() > 1
    {
        return Err(crate::invalid("clip actions", format!("{actions:?}: one player and one camera action at most")));
    }
    let mut scene = Scene::new(seed, cfg);
    scene.ball = actions.contains(&Action::Bounce);
    let frames = (0..cfg.frames)
        .map(|_| {
            let f = scene.draw();
            scene.step(actions);
            f
        })
        .collect();
    let prompt = actions.iter().map(|a| a.phrase()).collect::<Vec<_>>().join(", ");
    Ok(Clip { seed, actions: actions.to_vec(), prompt, width: cfg.width, height: cfg.height, frames })
}

type Rgb = [f32; 3];

/// The player's colour, as in the demo game.
pub const PLAYER_RGB: [u8; 3] = [51, 217, 77];

/// A scene: fixed scenery from the seed plus the moving state.
struct Scene {
    w: f32,
    h: f32,
    dt: f32,
    ground: f32,
    sky_top: Rgb,
    sky_bottom: Rgb,
    hills: Rgb,
    hill_phase: f32,
    hill_freq: f32,
    /// Mid-ground blocks: world x, width, height, colour.
    blocks: Vec<(f32, f32, f32, Rgb)>,
    door_x: f32,
    ball_rgb: Rgb,
    size: f32,
    camera: f32,
    /// Player position (bottom centre, world coordinates) and vertical velocity.
    px: f32,
    py: f32,
    pvy: f32,
    /// Ball centre (screen-fixed x), vertical position and velocity, radius.
    bx: f32,
    by: f32,
    bvy: f32,
    br: f32,
    ball: bool,
    jumped: bool,
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

/// HSL (degrees, 0..1, 0..1) to RGB in 0..1.
fn hsl(h: f32, s: f32, l: f32) -> Rgb {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let hp = (h.rem_euclid(360.0)) / 60.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    [r + m, g + m, b + m]
}

impl Scene {
    fn new(seed: u64, cfg: &ClipConfig) -> Self {
        let mut rng = NoiseRng::new(seed ^ 0x5343_454e_4500_0000);
        let mut u = || rng.uniform() as f32;
        let (w, h) = (cfg.width as f32, cfg.height as f32);
        let ground = h * (0.72 + 0.1 * u());
        let sky_hue = 200.0 + 40.0 * u();
        let blocks = (0..6)
            .map(|i| {
                let x = (i as f32 - 1.0) * w * 0.45 + u() * w * 0.2;
                let bw = w * (0.12 + 0.1 * u());
                let bh = h * (0.15 + 0.25 * u());
                (x, bw, bh, hsl(180.0 + 40.0 * (i % 3) as f32 + 20.0 * u(), 0.5, 0.4 + 0.1 * u()))
            })
            .collect();
        let size = (w * (0.1 + 0.04 * u())).round();
        Self {
            w,
            h,
            dt: 1.0 / cfg.fps,
            ground,
            sky_top: hsl(sky_hue, 0.4, 0.12 + 0.05 * u()),
            sky_bottom: hsl(sky_hue, 0.35, 0.25 + 0.08 * u()),
            hills: hsl(sky_hue - 20.0, 0.25, 0.2 + 0.05 * u()),
            hill_phase: u() * std::f32::consts::TAU,
            hill_freq: 2.0 + 2.0 * u(),
            blocks,
            door_x: w * (0.55 + 0.3 * u()),
            ball_rgb: hsl(360.0 * u(), 0.7, 0.55),
            size,
            camera: 0.0,
            px: w * (0.3 + 0.4 * u()),
            py: ground,
            pvy: 0.0,
            bx: w * (0.2 + 0.6 * u()),
            by: h * (0.1 + 0.15 * u()),
            bvy: 0.0,
            br: (w * 0.06).max(2.0),
            ball: false,
            jumped: false,
        }
    }

    /// Advances the physics by one frame.
    fn step(&mut self, actions: &[Action]) {
        let dt = self.dt;
        let g = self.h * 6.0;
        let speed = self.w * 0.6;
        for &a in actions {
            match a {
                Action::WalkLeft => self.px -= speed * dt,
                Action::WalkRight => self.px += speed * dt,
                Action::PanLeft => self.camera -= speed * 0.8 * dt,
                Action::PanRight => self.camera += speed * 0.8 * dt,
                Action::Jump if !self.jumped => {
                    self.pvy = -(2.0 * g * self.h * 0.3).sqrt();
                    self.jumped = true;
                }
                Action::Bounce => {
                    self.bvy += g * dt;
                    self.by += self.bvy * dt;
                    if self.by + self.br > self.ground {
                        self.by = self.ground - self.br;
                        self.bvy = -self.bvy * 0.75;
                    }
                }
                _ => {}
            }
        }
        if self.jumped {
            self.pvy += g * dt;
            self.py += self.pvy * dt;
            if self.py >= self.ground {
                self.py = self.ground;
                self.pvy = 0.0;
            }
        }
    }

    /// Renders the current state as RGB8.
    fn draw(&self) -> Vec<u8> {
        let (wi, hi) = (self.w as usize, self.h as usize);
        let mut img = vec![[0f32; 3]; wi * hi];
        for y in 0..hi {
            let sky = mix(self.sky_top, self.sky_bottom, y as f32 / self.h);
            for x in 0..wi {
                img[y * wi + x] = sky;
            }
        }
        // Far hills at 0.3× the camera's motion.
        for x in 0..wi {
            let wx = (x as f32 + self.camera * 0.3) / self.w;
            let top = self.ground
                - self.h * (0.18 + 0.08 * (wx * self.hill_freq * std::f32::consts::TAU + self.hill_phase).sin());
            for y in (top.max(0.0) as usize)..hi {
                img[y * wi + x] = self.hills;
            }
        }
        // Mid-ground blocks at 0.6×, repeating every 2.7 widths.
        let period = self.w * 2.7;
        for &(bx, bw, bh, c) in &self.blocks {
            let sx = (bx - self.camera * 0.6).rem_euclid(period) - self.w * 0.5;
            fill_rect(&mut img, wi, hi, sx, self.ground - bh, bw, bh, c);
        }
        // Ground with stripes at 1×, door on it.
        let ground_c = [0.35, 0.25, 0.2];
        let stripe_c = [0.3, 0.21, 0.17];
        for y in (self.ground as usize).min(hi)..hi {
            for x in 0..wi {
                let wx = x as f32 + self.camera;
                img[y * wi + x] = if (wx / (self.w * 0.125)).floor() as i64 % 2 == 0 { ground_c } else { stripe_c };
            }
        }
        let (dw, dh) = (self.w * 0.09, self.h * 0.2);
        fill_rect(&mut img, wi, hi, self.door_x - self.camera - dw / 2.0, self.ground - dh, dw, dh, [0.9, 0.75, 0.2]);
        let s = self.size;
        let p = PLAYER_RGB.map(|v| v as f32 / 255.0);
        fill_rect(&mut img, wi, hi, self.px - self.camera - s / 2.0, self.py - s, s, s, p);
        if self.ball {
            fill_circle(&mut img, wi, hi, self.bx, self.by, self.br, self.ball_rgb);
        }
        img.iter().flat_map(|c| c.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)).collect()
    }
}

#[allow(clippy::too_many_arguments)]
fn fill_rect(img: &mut [Rgb], w: usize, h: usize, x: f32, y: f32, rw: f32, rh: f32, c: Rgb) {
    let (x0, x1) = (x.round().max(0.0) as usize, ((x + rw).round().max(0.0) as usize).min(w));
    let (y0, y1) = (y.round().max(0.0) as usize, ((y + rh).round().max(0.0) as usize).min(h));
    for yy in y0..y1 {
        for xx in x0..x1 {
            img[yy * w + xx] = c;
        }
    }
}

fn fill_circle(img: &mut [Rgb], w: usize, h: usize, cx: f32, cy: f32, r: f32, c: Rgb) {
    let (y0, y1) = ((cy - r).floor().max(0.0) as usize, ((cy + r).ceil().max(0.0) as usize).min(h));
    let (x0, x1) = ((cx - r).floor().max(0.0) as usize, ((cx + r).ceil().max(0.0) as usize).min(w));
    for yy in y0..y1 {
        for xx in x0..x1 {
            let (dx, dy) = (xx as f32 + 0.5 - cx, yy as f32 + 0.5 - cy);
            if dx * dx + dy * dy <= r * r {
                img[yy * w + xx] = c;
            }
        }
    }
}
