use aiprod_media::*;
fn main() {
    for camera in [CameraMove::Static, CameraMove::Pan, CameraMove::Zoom, CameraMove::Orbital] {
        let spec = Animatic { shot_number: 1, shot_count: 2, description: "hello world this is a test", duration_ms: 5000, camera, palette: &[[200, 40, 40], [20, 40, 90]], format: Format { width: 1280, height: 720, fps: 24 }, seed: 1 };
        let (r, c) = __bench_render(&spec);
        println!("{camera:?}: render {r:.0} fps, convert {c:.0} fps");
    }
}
