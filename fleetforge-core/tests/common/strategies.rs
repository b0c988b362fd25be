//! Generators of worlds and loads for the property tests.

use std::time::Duration;

use fleetforge_core::sim::{Population, SplitMix};
use fleetforge_core::{Axis, Bounds, Point, World};
use proptest::prelude::*;

use super::world;

/// A box of 1 to 3 dimensions with edges in [-1000, 1000].
pub fn any_bounds() -> impl Strategy<Value = Bounds> {
    (
        1usize..=3,
        prop::array::uniform3((-1000.0f64..0.0, 1.0f64..1000.0)),
    )
        .prop_map(|(dims, r)| {
            let x = (r[0].0, r[0].1);
            let y = (r[1].0, r[1].1);
            let z = (r[2].0, r[2].1);
            match dims {
                1 => Bounds::line(x),
                2 => Bounds::rect(x, y),
                _ => Bounds::cuboid(x, y, z),
            }
            .unwrap()
        })
}

/// The point at fractions `u` of `b` along each axis.
pub fn point_in(b: &Bounds, u: [f64; 3]) -> Point {
    let c = |a: Axis| b.min(a) + b.extent(a) * u[a.index()];
    Point::new(c(Axis::X), c(Axis::Y), c(Axis::Z))
}

/// A random world for the planner properties: 1 to 3 dimensions, up to 12 initial
/// cells, a random policy within the model's rules.
pub fn any_world() -> impl Strategy<Value = World> {
    (
        any_bounds(),
        1u32..=12,
        (0.55f64..0.95, 0.05f64..0.5),
        (0u32..3, 0u32..24),
        (0u64..6, 0u64..12, 1u32..6),
        any::<bool>(),
    )
        .prop_map(
            |(bounds, initial, (up, down), (below, above), (window, cooldown, rate), predict)| {
                let mut w = world(initial);
                w.bounds = bounds;
                w.policy.scale_up_threshold = up;
                w.policy.scale_down_threshold = down;
                w.policy.min_cells = initial.saturating_sub(below).max(1);
                w.policy.max_cells = initial + above;
                w.policy.stabilization_window = Duration::from_secs(window);
                w.policy.cooldown = Duration::from_secs(cooldown);
                w.policy.max_transitions = rate;
                w.policy.rate_limit_period = Duration::from_secs(20);
                w.policy.prediction = predict.then(|| fleetforge_core::Prediction {
                    horizon: Duration::from_secs(5),
                    min_samples: 3,
                });
                w
            },
        )
}

/// Players clustered in a few random hot spots plus a uniform background.
pub fn any_population(
    world: &World,
    seed: u64,
    spots: usize,
    per_spot: usize,
    background: usize,
) -> Population {
    let mut rng = SplitMix::new(seed);
    let b = &world.bounds;
    let mut p = Population::uniform(b, background, &mut rng);
    for _ in 0..spots {
        let c = point_in(b, [rng.next_f64(), rng.next_f64(), rng.next_f64()]);
        let size = |a: Axis| b.extent(a) * 0.05;
        let area = match b.dims() {
            1 => Bounds::line((c.x, c.x + size(Axis::X))),
            2 => Bounds::rect((c.x, c.x + size(Axis::X)), (c.y, c.y + size(Axis::Y))),
            _ => Bounds::cuboid(
                (c.x, c.x + size(Axis::X)),
                (c.y, c.y + size(Axis::Y)),
                (c.z, c.z + size(Axis::Z)),
            ),
        }
        .unwrap();
        // Clamp into the world so no player sits outside it.
        let before = p.players.len();
        p.add_uniform(&area, per_spot, &mut rng);
        for q in &mut p.players[before..] {
            for a in b.axes() {
                let v = q.get(a).min(b.max(a) - 1e-9);
                match a {
                    Axis::X => q.x = v,
                    Axis::Y => q.y = v,
                    Axis::Z => q.z = v,
                }
            }
        }
    }
    p
}
