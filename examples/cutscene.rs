//! The cutscene demo: a small scene whose captured frame is continued by a generated cutscene.
//!
//! The plugin it needs has not landed yet, so for now the demo explains that and shows the
//! section plan of the cutscene it will generate.

use bevy_framepack::framepack::packing::{ContextSchedule, SectionPlan};

fn main() {
    println!("bevy_framepack demo: not yet available.");
    println!("The FramePackPlugin (capture, worker, playback) is still being built; this build ships");
    println!("the engine-agnostic core. The demo's 5-second F1 cutscene at 640x608 will be planned as:");
    let schedule = ContextSchedule::geometric();
    match SectionPlan::from_seconds(5.0, 9, schedule.order)
        .and_then(|plan| Ok((schedule.context_tokens(9, 80, 76)?, plan)))
    {
        Ok((tokens, plan)) => {
            for s in plan.sections() {
                println!("  section {}: video frames {:?}", s.index + 1, s.frames);
            }
            println!("  {} frames in all, {} image tokens per section", plan.total_frames(), tokens.total());
            println!("Try the planner: cargo run -p framepack-cli -- plan --seconds 5");
        }
        Err(e) => eprintln!("error: {e}"),
    }
}
