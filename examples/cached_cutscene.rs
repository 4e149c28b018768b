//! Plays a shipped cutscene with no model loaded: `assets/cutscenes/ball.cutscene` was generated
//! once with the CLI (`framepack generate --weights assets/nano … --out ball.cutscene`) and loads
//! like any other asset.
//!
//! Space pauses, ← / → seek by a second, +/- change the speed, L toggles looping.
//!
//! ```text
//! cargo run --example cached_cutscene
//! ```
use bevy::prelude::*;
use bevy_framepack::prelude::*;

fn main() {
    App::new()
        .add_plugins((DefaultPlugins, FramePackPlugin))
        .add_systems(Startup, setup)
        .add_systems(Update, (control, show_state))
        .run();
}

#[derive(Component)]
struct Status;

fn setup(mut commands: Commands, server: Res<AssetServer>) {
    commands.spawn(Camera2d);
    let clip: Handle<CutsceneClip> = server.load("cutscenes/ball.cutscene");
    commands
        .spawn((
            Sprite { custom_size: Some(Vec2::splat(384.0)), ..default() },
            CutscenePlayer::new(clip),
            CutscenePlayback::LOOP,
        ))
        .observe(|ev: On<CutsceneLooped>| info!("looped {} time(s)", ev.loops))
        .observe(|ev: On<CutsceneFinished>| info!("{} finished", ev.entity))
        .observe(|ev: On<CutsceneFailed>| error!("{}", ev.error));
    commands.spawn((
        Text::new(""),
        Node { position_type: PositionType::Absolute, top: px(12), left: px(12), ..default() },
        Status,
    ));
}

fn control(keys: Res<ButtonInput<KeyCode>>, mut players: Query<(&mut CutscenePlayer, &mut CutscenePlayback)>) {
    for (mut player, mut playback) in &mut players {
        if keys.just_pressed(KeyCode::Space) {
            playback.paused = !playback.paused;
        }
        let second = 30;
        let frame = player.current_frame().unwrap_or(0);
        if keys.just_pressed(KeyCode::ArrowRight) {
            player.seek(frame + second);
        }
        if keys.just_pressed(KeyCode::ArrowLeft) {
            player.seek(frame.saturating_sub(second));
        }
        if keys.just_pressed(KeyCode::Equal) {
            playback.speed = (playback.speed * 2.0).min(8.0);
        }
        if keys.just_pressed(KeyCode::Minus) {
            playback.speed = (playback.speed / 2.0).max(0.125);
        }
        if keys.just_pressed(KeyCode::KeyL) {
            playback.mode = if playback.mode == PlaybackMode::Loop { PlaybackMode::Once } else { PlaybackMode::Loop };
        }
    }
}

fn show_state(
    players: Query<(&CutscenePlayer, &CutscenePlayback)>,
    clips: Res<Assets<CutsceneClip>>,
    status: Res<FramePackStatus>,
    mut text: Single<&mut Text, With<Status>>,
) {
    let Some((player, playback)) = players.iter().next() else { return };
    let frames = clips.get(player.clip()).map_or(0, CutsceneClip::len);
    text.0 = format!(
        "frame {:?} of {frames}, {:?}, {:?}{}, speed {}×\nmodel: {status:?} (a cached clip needs none)\n\
         Space pause · ←/→ seek · +/- speed · L loop",
        player.current_frame(),
        player.state(),
        playback.mode,
        if playback.paused { " (paused)" } else { "" },
        playback.speed,
    );
}
