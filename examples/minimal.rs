//! The smallest FramePack app: a cutscene generated from a gradient plays on a sprite while it
//! generates. The default model is the embedded nano model, trained on the demo's kind of scene.
use bevy::prelude::*;
use bevy_framepack::prelude::*;

fn main() {
    App::new().add_plugins((DefaultPlugins, FramePackPlugin)).add_systems(Startup, setup).run();
}

fn setup(mut commands: Commands, mut framepack: FramePack) -> Result {
    commands.spawn(Camera2d);
    let preset = Preset { prompt: "a cat walks".into(), seconds: 2.0, steps: 4, resolution: 64, ..default() };
    let gradient = (0..64 * 64).flat_map(|i: u32| [(i % 64 * 4) as u8, (i / 64 * 4) as u8, 128, 255]).collect();
    let ticket = framepack.generate(preset.request(RgbaImage::new(64, 64, gradient)?))?;
    // The player points the sprite at its image; frames stream in as sections finish.
    let sprite = Sprite { custom_size: Some(Vec2::splat(384.0)), ..default() };
    commands.spawn((sprite, CutscenePlayer::new(ticket.clip), preset.playback_settings()));
    Ok(())
}
