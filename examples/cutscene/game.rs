//! The game: a flat 2-D scene (sky, ground, blocks, the golden door), the green square the
//! player moves, and the in-world screen the cutscene plays on. The screen and the status line
//! are on their own render layer, which the capture camera does not see: the model gets the
//! game alone, as in its training clips.

use bevy::camera::RenderTarget;
use bevy::camera::visibility::RenderLayers;
use bevy::prelude::*;
use bevy::render::render_resource::TextureFormat;
use bevy_framepack::prelude::*;

use crate::Args;

pub const VIEW: (u32, u32) = (640, 480);
pub const DOOR: Vec2 = Vec2::new(220.0, -120.0);
/// The render layer of what is not the game: the in-world screen and the status line.
const OVERLAY: usize = 1;

#[derive(Component)]
pub struct Player;
#[derive(Component)]
pub struct Screen;
#[derive(Component)]
pub struct Status;
/// The camera that renders the game without the overlay for captures.
#[derive(Component)]
pub struct CaptureCamera;
#[derive(Resource)]
pub struct Scene {
    /// The offscreen image the camera renders to in headless mode.
    pub target: Option<Handle<Image>>,
    /// What the capture camera renders: the game without the screen and the status line.
    pub capture: Handle<Image>,
    pub preset: Handle<Preset>,
    pub job: Option<JobId>,
    pub triggered: bool,
}

pub fn setup(mut commands: Commands, args: Res<Args>, server: Res<AssetServer>, mut images: ResMut<Assets<Image>>) {
    let target = args
        .headless
        .then(|| images.add(Image::new_target_texture(VIEW.0, VIEW.1, TextureFormat::Rgba8UnormSrgb, None)));
    let mut camera = commands.spawn((Camera2d, RenderLayers::from_layers(&[0, OVERLAY])));
    if let Some(t) = &target {
        camera.insert(RenderTarget::from(t.clone()));
    }
    let capture = images.add(Image::new_target_texture(VIEW.0, VIEW.1, TextureFormat::Rgba8UnormSrgb, None));
    // Renders only while a capture is pending (see `capture.rs`), so it costs nothing otherwise.
    commands.spawn((
        Camera2d,
        Camera { order: -1, is_active: false, ..default() },
        RenderTarget::from(capture.clone()),
        RenderLayers::layer(0),
        CaptureCamera,
    ));
    let rect = |c: Color, size: Vec2, at: Vec2, z: f32| {
        (Sprite { color: c, custom_size: Some(size), ..default() }, Transform::from_translation(at.extend(z)))
    };
    commands.spawn(rect(Color::srgb(0.15, 0.2, 0.3), Vec2::new(640.0, 480.0), Vec2::ZERO, 0.0));
    commands.spawn(rect(Color::srgb(0.35, 0.25, 0.2), Vec2::new(640.0, 120.0), Vec2::new(0.0, -180.0), 0.1));
    for (i, x) in [-220.0f32, -60.0, 80.0].into_iter().enumerate() {
        let c = Color::hsl(40.0 * i as f32 + 180.0, 0.5, 0.45);
        commands.spawn(rect(c, Vec2::new(70.0, 90.0 + 30.0 * i as f32), Vec2::new(x, -75.0 + 15.0 * i as f32), 0.2));
    }
    commands.spawn(rect(Color::srgb(0.9, 0.75, 0.2), Vec2::new(50.0, 90.0), DOOR, 0.3));
    commands.spawn((rect(Color::srgb(0.2, 0.85, 0.3), Vec2::splat(36.0), Vec2::new(-280.0, -120.0), 0.5), Player));
    // The in-world screen: frame + the cutscene sprite (a CutscenePlayer is added on capture).
    let overlay = RenderLayers::layer(OVERLAY);
    commands.spawn((
        rect(Color::srgb(0.05, 0.05, 0.05), Vec2::new(236.0, 180.0), Vec2::new(180.0, 130.0), 0.6),
        overlay.clone(),
    ));
    commands.spawn((
        rect(Color::srgb(0.2, 0.2, 0.2), Vec2::new(224.0, 168.0), Vec2::new(180.0, 130.0), 0.7),
        overlay.clone(),
        Screen,
    ));
    commands.spawn((
        Text2d::new("Walk into the golden door or press C"),
        TextFont { font_size: FontSize::Px(14.0), ..default() },
        Transform::from_xyz(-135.0, 210.0, 1.0),
        overlay,
        Status,
    ));
    let preset = match (&args.preset, &args.model) {
        (Some(p), _) => p.clone(),
        (None, Some(_)) => "presets/door.preset.ron".into(),
        (None, None) => "presets/nano.preset.ron".into(),
    };
    commands.insert_resource(Scene { target, capture, preset: server.load(preset), job: None, triggered: false });
}

pub fn move_player(keys: Res<ButtonInput<KeyCode>>, time: Res<Time>, mut q: Query<&mut Transform, With<Player>>) {
    let mut dir = Vec2::ZERO;
    for (k, d) in [
        (KeyCode::ArrowLeft, Vec2::NEG_X),
        (KeyCode::KeyA, Vec2::NEG_X),
        (KeyCode::ArrowRight, Vec2::X),
        (KeyCode::KeyD, Vec2::X),
        (KeyCode::ArrowUp, Vec2::Y),
        (KeyCode::KeyW, Vec2::Y),
        (KeyCode::ArrowDown, Vec2::NEG_Y),
        (KeyCode::KeyS, Vec2::NEG_Y),
    ] {
        if keys.pressed(k) {
            dir += d;
        }
    }
    for mut t in &mut q {
        let p = t.translation.truncate() + dir.normalize_or_zero() * 200.0 * time.delta_secs();
        t.translation = p.clamp(Vec2::new(-300.0, -220.0), Vec2::new(300.0, 220.0)).extend(t.translation.z);
    }
}
