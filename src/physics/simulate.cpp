// Rigid-body simulation of the fractured buildings on Bullet, with breakable bonds, triggers
// and dust. Fixed substeps and a fixed order of everything make it deterministic.
#include "derrumbe/physics/simulate.hpp"

#include <LinearMath/btGeometryUtil.h>
#include <btBulletDynamicsCommon.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "geometry.hpp"

namespace drb::physics {

namespace {

btVector3 bt(const Vec3& v) { return btVector3(static_cast<btScalar>(v.x()), static_cast<btScalar>(v.y()), static_cast<btScalar>(v.z())); }

btTransform bt(const Eigen::Isometry3d& iso) {
  const Quat q(iso.linear());
  return btTransform(btQuaternion(static_cast<btScalar>(q.x()), static_cast<btScalar>(q.y()), static_cast<btScalar>(q.z()),
                                  static_cast<btScalar>(q.w())),
                     bt(Vec3(iso.translation())));
}

// An icosphere-ish mesh (an octahedron subdivided twice) for projectiles.
Mesh sphere_mesh(double radius) {
  Mesh m;
  std::vector<Eigen::Vector3f> v = {{1, 0, 0}, {-1, 0, 0}, {0, 1, 0}, {0, -1, 0}, {0, 0, 1}, {0, 0, -1}};
  std::vector<std::array<uint32_t, 3>> t = {{0, 2, 4}, {2, 1, 4}, {1, 3, 4}, {3, 0, 4},
                                            {2, 0, 5}, {1, 2, 5}, {3, 1, 5}, {0, 3, 5}};
  for (int level = 0; level < 2; ++level) {
    std::vector<std::array<uint32_t, 3>> next;
    for (const auto& tri : t) {
      uint32_t mid[3];
      for (int e = 0; e < 3; ++e) {
        v.push_back((v[tri[e]] + v[tri[(e + 1) % 3]]).normalized());
        mid[e] = static_cast<uint32_t>(v.size() - 1);
      }
      next.push_back({tri[0], mid[0], mid[2]});
      next.push_back({mid[0], tri[1], mid[1]});
      next.push_back({mid[2], mid[1], tri[2]});
      next.push_back({mid[0], mid[1], mid[2]});
    }
    t = next;
  }
  for (auto& p : v) p *= static_cast<float>(radius);
  m.vertices = v;
  m.triangles = t;
  return m;
}

// Bullet inflates a convex hull by its collision margin; pieces built touching would then
// overlap and push each other apart. The hull's face planes are moved inward by the margin
// so that hull + margin is the piece's true shape.
std::unique_ptr<btConvexHullShape> collision_hull(const Mesh& mesh) {
  constexpr btScalar margin = 0.01f;
  btAlignedObjectArray<btVector3> points, planes, shrunk;
  for (const auto& v : mesh.vertices) points.push_back(btVector3(v.x(), v.y(), v.z()));
  btGeometryUtil::getPlaneEquationsFromVertices(points, planes);
  for (int i = 0; i < planes.size(); ++i) planes[i][3] += margin;  // plane: n . x + d = 0, n outward
  btGeometryUtil::getVerticesFromPlaneEquations(planes, shrunk);
  auto hull = std::make_unique<btConvexHullShape>();
  const auto& use = shrunk.size() >= 4 ? shrunk : points;  // a piece too thin to shrink keeps its shape
  for (int i = 0; i < use.size(); ++i) hull->addPoint(use[i], false);
  hull->recalcLocalAabb();
  hull->setMargin(margin);
  return hull;
}

struct World {
  btDefaultCollisionConfiguration config;
  btCollisionDispatcher dispatcher{&config};
  btDbvtBroadphase broadphase;
  btSequentialImpulseConstraintSolver solver;
  btDiscreteDynamicsWorld world{&dispatcher, &broadphase, &solver, &config};
  std::vector<std::unique_ptr<btCollisionShape>> shapes;
  std::vector<std::unique_ptr<btDefaultMotionState>> motion;
  std::vector<std::unique_ptr<btRigidBody>> bodies;  // one per piece
  std::vector<bool> in_world;
  std::unique_ptr<btRigidBody> ground;
  std::vector<std::unique_ptr<btFixedConstraint>> bonds;  // one per Fractured::bonds entry
  std::vector<bool> bond_active;

  ~World() {
    for (size_t i = 0; i < bonds.size(); ++i)
      if (bond_active[i]) world.removeConstraint(bonds[i].get());
    for (size_t i = 0; i < bodies.size(); ++i)
      if (in_world[i]) world.removeRigidBody(bodies[i].get());
    if (ground) world.removeRigidBody(ground.get());
  }
  void remove_bond(size_t i) {
    if (!bond_active[i]) return;
    world.removeConstraint(bonds[i].get());  // also lets the two pieces collide again
    bond_active[i] = false;
  }
};

constexpr double kReleaseTime = 0.4;  // s
constexpr double kSettleTime = 1.0;   // s
constexpr btScalar kAngularDamping = 0.05f;  // a little rolling resistance for debris

struct Dust {
  std::vector<Eigen::Vector3d> x, v;
  std::vector<double> age;
  std::vector<uint64_t> id;
  uint64_t next_id = 0;
};

}  // namespace

SimTrack simulate(const Scene& scene, const SimProgress& progress) {
  Fractured fr = fracture(scene);
  const int64_t frames = scene.num_frames();
  const double dt_frame = 1.0 / scene.fps, dt = dt_frame / scene.substeps;
  const double energy_scale = 0.5 + scene.intensity;

  SimTrack track;
  track.fps = scene.fps;
  track.materials = scene.materials;
  track.cameras = scene.cameras;
  track.pieces = std::move(fr.pieces);
  std::vector<Eigen::Isometry3d> start = fr.rest_poses;
  // Projectiles are pieces too, waiting at their start position until their trigger time.
  std::vector<std::pair<size_t, size_t>> projectile_of_trigger;  // trigger -> piece
  for (size_t t = 0; t < scene.triggers.size(); ++t) {
    const Trigger& tr = scene.triggers[t];
    if (tr.type != TriggerType::impact) continue;
    Piece p;
    p.id = static_cast<uint32_t>(track.pieces.size());
    p.kind = PieceKind::debris;
    p.material = 0;
    p.mass = tr.mass;
    const double I = 0.4 * tr.mass * tr.radius * tr.radius;
    p.inertia = Vec3(I, I, I);
    p.mesh = sphere_mesh(tr.radius);
    projectile_of_trigger.emplace_back(t, track.pieces.size());
    track.pieces.push_back(std::move(p));
    Eigen::Isometry3d iso = Eigen::Isometry3d::Identity();
    iso.translation() = tr.position;
    start.push_back(iso);
  }
  const size_t n = track.pieces.size();

  World w;
  w.world.setGravity(btVector3(0, -9.81f, 0));
  w.world.getSolverInfo().m_numIterations = 40;
  auto plane = std::make_unique<btStaticPlaneShape>(btVector3(0, 1, 0), 0);
  {
    btRigidBody::btRigidBodyConstructionInfo info(0, nullptr, plane.get());
    info.m_friction = static_cast<btScalar>(scene.ground.friction);
    info.m_restitution = static_cast<btScalar>(scene.ground.restitution);
    w.ground = std::make_unique<btRigidBody>(info);
    // The ground is static, or kinematic when it shakes (a moving kinematic body wakes what
    // touches it, so it is only kinematic when it has to be).
    const bool shakes = std::any_of(scene.triggers.begin(), scene.triggers.end(),
                                    [](const Trigger& t) { return t.type == TriggerType::shake; });
    if (shakes) {
      w.ground->setCollisionFlags(w.ground->getCollisionFlags() | btCollisionObject::CF_KINEMATIC_OBJECT);
      w.ground->setActivationState(DISABLE_DEACTIVATION);
    }
    w.world.addRigidBody(w.ground.get());
  }
  w.shapes.push_back(std::move(plane));
  for (size_t i = 0; i < n; ++i) {
    const Piece& p = track.pieces[i];
    auto hull = collision_hull(p.mesh);
    w.motion.push_back(std::make_unique<btDefaultMotionState>(bt(start[i])));
    btRigidBody::btRigidBodyConstructionInfo info(static_cast<btScalar>(p.mass), w.motion.back().get(), hull.get(),
                                                  bt(p.inertia));
    const Material& m = track.materials[p.material];
    info.m_friction = static_cast<btScalar>(m.friction);
    info.m_restitution = static_cast<btScalar>(m.restitution);
    w.bodies.push_back(std::make_unique<btRigidBody>(info));
    w.shapes.push_back(std::move(hull));
    const bool waiting_projectile = p.kind == PieceKind::debris && p.building < 0;
    w.in_world.push_back(!waiting_projectile);
    if (!waiting_projectile) w.world.addRigidBody(w.bodies.back().get());
  }
  for (const Bond& b : fr.bonds) {
    btRigidBody& A = *w.bodies[b.piece_a];
    btRigidBody& B = b.piece_b == kGroundPiece ? *w.ground : *w.bodies[b.piece_b];
    Eigen::Isometry3d joint = Eigen::Isometry3d::Identity();
    joint.translation() = b.position;
    const Eigen::Isometry3d ground_pose = Eigen::Isometry3d::Identity();
    const Eigen::Isometry3d& pose_b = b.piece_b == kGroundPiece ? ground_pose : start[b.piece_b];
    auto c = std::make_unique<btFixedConstraint>(A, B, bt(start[b.piece_a].inverse() * joint), bt(pose_b.inverse() * joint));
    w.world.addConstraint(c.get(), /*disableCollisionsBetweenLinkedBodies=*/true);
    w.bonds.push_back(std::move(c));
    w.bond_active.push_back(true);
  }

  // Settling: the structure as built is not yet loaded. It settles under gravity for
  // kSettleTime with unbreakable bonds and heavy damping, so that the loads reach their static
  // equilibrium; only then do bonds get their strengths (their elastic transient would
  // otherwise be simulated as if it were damage). Frame 0 is the settled state.
  for (auto& body : w.bodies) body->setDamping(0.9f, 0.9f);
  for (int s = 0; s < static_cast<int>(std::lround(kSettleTime / dt)); ++s) w.world.stepSimulation(static_cast<btScalar>(dt), 0);
  for (size_t i = 0; i < n; ++i) {
    btRigidBody& body = *w.bodies[i];
    body.setDamping(0.0f, kAngularDamping);
    body.setLinearVelocity(btVector3(0, 0, 0));
    body.setAngularVelocity(btVector3(0, 0, 0));
    if (w.in_world[i]) {
      btTransform settled;
      body.getMotionState()->getWorldTransform(settled);
      const btQuaternion q = settled.getRotation();
      start[i].linear() = Quat(q.w(), q.x(), q.y(), q.z()).toRotationMatrix();
      start[i].translation() = Vec3(settled.getOrigin().x(), settled.getOrigin().y(), settled.getOrigin().z());
    }
    // The structure starts at rest, asleep: a trigger (or a collision) wakes it.
    body.setActivationState(ISLAND_SLEEPING);
  }
  for (size_t k = 0; k < w.bonds.size(); ++k)
    w.bonds[k]->setBreakingImpulseThreshold(static_cast<btScalar>(fr.bonds[k].strength * dt));

  // Which floor of its building each piece belongs to (for charges and support removal).
  std::vector<int> floor_of(n, -1);
  for (size_t i = 0; i < n; ++i) {
    const Piece& p = track.pieces[i];
    if (p.building < 0) continue;
    const Building& B = scene.buildings[static_cast<size_t>(p.building)];
    floor_of[i] = static_cast<int>(std::floor(start[i].translation().y() / B.floor_height));
  }

  track.poses = xt::xtensor<float, 3>::from_shape({static_cast<size_t>(frames), n, 7});
  auto record = [&](int64_t f) {
    for (size_t i = 0; i < n; ++i) {
      btTransform t;
      if (w.in_world[i]) w.bodies[i]->getMotionState()->getWorldTransform(t);
      else t = bt(start[i]);
      const btQuaternion q = t.getRotation();
      const btVector3 o = t.getOrigin();
      const float vals[7] = {q.x(), q.y(), q.z(), q.w(), o.x(), o.y(), o.z()};
      for (size_t k = 0; k < 7; ++k) track.poses(static_cast<size_t>(f), i, k) = vals[k];
    }
  };
  auto activate_all = [&] {
    for (size_t i = 0; i < n; ++i)
      if (w.in_world[i]) w.bodies[i]->activate(true);
  };
  auto cut_bonds_of = [&](size_t piece) {
    for (size_t k = 0; k < fr.bonds.size(); ++k)
      if (fr.bonds[k].piece_a == piece || fr.bonds[k].piece_b == piece) w.remove_bond(k);
  };
  auto outward = [&](size_t piece, const Building& B) {
    Vec3 d = start[piece].translation() - Vec3(B.position.x(), start[piece].translation().y(), B.position.y());
    if (d.norm() < 1e-6) d = Vec3(1, 0, 0);
    return Vec3(d.normalized());
  };

  // A blasted or removed support no longer carries load: for kReleaseTime it collides only
  // with the ground (it is pulverized or pulled out), so the floors above lose their support
  // instead of resting on it; afterwards it is ordinary debris.
  std::vector<double> released_until(n, -1.0);
  std::vector<bool> crushed(n, false);
  std::vector<double> bonded_area(n, 0.0), broken_area(n, 0.0);
  for (const Bond& b : fr.bonds) {
    bonded_area[b.piece_a] += b.area;
    if (b.piece_b != kGroundPiece) bonded_area[b.piece_b] += b.area;
  }
  auto release = [&](size_t i, double until) {
    w.world.removeRigidBody(w.bodies[i].get());
    w.world.addRigidBody(w.bodies[i].get(), btBroadphaseProxy::DebrisFilter, btBroadphaseProxy::StaticFilter);
    released_until[i] = until;
  };
  auto restore_released = [&](double t) {
    for (size_t i = 0; i < n; ++i)
      if (released_until[i] >= 0 && t >= released_until[i]) {
        w.world.removeRigidBody(w.bodies[i].get());
        w.world.addRigidBody(w.bodies[i].get());
        released_until[i] = -1.0;
      }
  };

  auto fire = [&](size_t t_index) {
    const Trigger& tr = scene.triggers[t_index];
    if (tr.type == TriggerType::charge || tr.type == TriggerType::remove_supports) {
      const Building& B = scene.buildings[static_cast<size_t>(tr.building)];
      for (int floor : tr.floors) {
        std::vector<size_t> hit;
        int column_index = 0;
        for (size_t i = 0; i < n; ++i) {
          const Piece& p = track.pieces[i];
          if (p.building != tr.building || floor_of[i] != floor) continue;
          if (p.kind == PieceKind::column) {
            const bool chosen = tr.columns.empty() ||
                                std::find(tr.columns.begin(), tr.columns.end(), column_index) != tr.columns.end();
            ++column_index;
            if (chosen) hit.push_back(i);
          } else if (p.kind == PieceKind::wall && tr.type == TriggerType::charge) {
            hit.push_back(i);
          }
        }
        double mass = 0;
        for (size_t i : hit) mass += track.pieces[i].mass;
        // Charge: the floor's energy, scaled by intensity, gives every hit piece the same speed.
        const double speed = tr.type == TriggerType::charge ? std::sqrt(2 * tr.energy * energy_scale / std::max(mass, 1.0))
                                                            : 4.0 * energy_scale;
        for (size_t i : hit) {
          cut_bonds_of(i);
          release(i, tr.time + kReleaseTime);
          const double jitter = 0.7 + 0.6 * detail::uniform01(scene.seed, 77, i, t_index);
          // Blown out and slightly down, away from the floor above.
          const Vec3 dir = (outward(i, B) - Vec3(0, 0.15, 0)).normalized();
          w.bodies[i]->setLinearVelocity(bt(Vec3(dir * speed * jitter)));
        }
      }
      activate_all();
    } else if (tr.type == TriggerType::impact) {
      for (const auto& [trigger, piece] : projectile_of_trigger) {
        if (trigger != t_index) continue;
        w.world.addRigidBody(w.bodies[piece].get());
        w.in_world[piece] = true;
        w.bodies[piece]->setLinearVelocity(bt(Vec3(tr.velocity * std::sqrt(energy_scale))));
      }
      activate_all();
    } else {
      activate_all();
    }
  };

  Dust dust;
  auto emit = [&](const Vec3& at, double energy, uint64_t event) {
    if (!scene.dust.enabled) return;
    for (int k = 0; k < scene.dust.particles_per_break; ++k) {
      if (static_cast<int>(dust.x.size()) >= scene.dust.max_particles) return;
      const double speed = std::min(6.0, 0.5 + std::sqrt(std::max(energy, 0.0)) * 1e-3);
      Vec3 dir(detail::uniform01(scene.seed, 11, event, static_cast<uint64_t>(k)) * 2 - 1,
               detail::uniform01(scene.seed, 12, event, static_cast<uint64_t>(k)),
               detail::uniform01(scene.seed, 13, event, static_cast<uint64_t>(k)) * 2 - 1);
      dust.x.push_back(at);
      dust.v.push_back(dir * speed);
      dust.age.push_back(0);
      dust.id.push_back(dust.next_id++);
    }
  };
  auto advect = [&](int64_t f) {
    const DustSettings& d = scene.dust;
    size_t kept = 0;
    for (size_t i = 0; i < dust.x.size(); ++i) {
      const uint64_t key = dust.id[i] * 1000003ull + static_cast<uint64_t>(f);
      const Vec3 noise(detail::uniform01(scene.seed, 21, key) * 2 - 1, detail::uniform01(scene.seed, 22, key) * 2 - 1,
                       detail::uniform01(scene.seed, 23, key) * 2 - 1);
      const Vec3 a = Vec3(0, -9.81 * (1 - d.buoyancy), 0) + noise * d.turbulence - dust.v[i] * d.drag;
      dust.v[i] += a * dt_frame;
      dust.x[i] += dust.v[i] * dt_frame;
      if (dust.x[i].y() < 0) {
        dust.x[i].y() = 0;
        dust.v[i].y() = std::max(0.0, dust.v[i].y());
      }
      dust.age[i] += dt_frame;
      if (dust.age[i] > d.lifetime) continue;
      dust.x[kept] = dust.x[i];
      dust.v[kept] = dust.v[i];
      dust.age[kept] = dust.age[i];
      dust.id[kept] = dust.id[i];
      ++kept;
    }
    dust.x.resize(kept);
    dust.v.resize(kept);
    dust.age.resize(kept);
    dust.id.resize(kept);
    xt::xtensor<float, 2> out = xt::xtensor<float, 2>::from_shape({kept, 5});
    for (size_t i = 0; i < kept; ++i) {
      const double life = dust.age[i] / d.lifetime;
      out(i, 0) = static_cast<float>(dust.x[i].x());
      out(i, 1) = static_cast<float>(dust.x[i].y());
      out(i, 2) = static_cast<float>(dust.x[i].z());
      out(i, 3) = static_cast<float>(d.radius * (1 + 2 * life));
      out(i, 4) = static_cast<float>((1 - life) * (1 - life));
    }
    return out;
  };

  record(0);
  track.dust.push_back(xt::xtensor<float, 2>::from_shape({0, 5}));
  std::vector<bool> fired(scene.triggers.size(), false);
  for (int64_t f = 1; f < frames; ++f) {
    for (int s = 0; s < scene.substeps; ++s) {
      const double t = ((f - 1) * scene.substeps + s) * dt;
      for (size_t k = 0; k < scene.triggers.size(); ++k)
        if (!fired[k] && scene.triggers[k].time <= t + 1e-9) {
          fired[k] = true;
          fire(k);
        }
      restore_released(t);
      // Ground shaking: the kinematic ground moves horizontally while a shake is active.
      Vec3 ground_offset(0, 0, 0);
      for (const Trigger& tr : scene.triggers)
        if (tr.type == TriggerType::shake && t >= tr.time && t <= tr.time + tr.duration)
          ground_offset.x() += tr.amplitude * energy_scale * std::sin(2 * M_PI * tr.frequency * (t + dt - tr.time));
      if (w.ground->isKinematicObject()) {
        btTransform g;
        g.setIdentity();
        g.setOrigin(bt(ground_offset));
        w.ground->setWorldTransform(g);
        w.ground->setInterpolationWorldTransform(g);
      }
      w.world.stepSimulation(static_cast<btScalar>(dt), 0);
      for (size_t k = 0; k < w.bonds.size(); ++k) {
        if (!w.bond_active[k] || w.bonds[k]->isEnabled()) continue;
        const Bond& b = fr.bonds[k];
        const btVector3 p = w.bodies[b.piece_a]->getWorldTransform() * w.bonds[k]->getFrameOffsetA().getOrigin();
        const double ma = track.pieces[b.piece_a].mass;
        const double mb = b.piece_b == kGroundPiece ? 1e30 : track.pieces[b.piece_b].mass;
        const double reduced = ma * mb / (ma + mb);
        const double impulse = b.strength * dt;
        const float energy = static_cast<float>(impulse * impulse / (2 * reduced));
        track.breaks.push_back({static_cast<int32_t>(f), b.piece_a, b.piece_b == kGroundPiece ? b.piece_a : b.piece_b,
                                Eigen::Vector3f(p.x(), p.y(), p.z()), energy});
        emit(Vec3(p.x(), p.y(), p.z()), energy, track.breaks.size());
        w.remove_bond(k);
        // A column that has lost half of its bonded area is crushed: it stops carrying the
        // floors above, which is what lets a collapse progress floor by floor.
        for (uint32_t piece : {b.piece_a, b.piece_b}) {
          if (piece == kGroundPiece) continue;
          broken_area[piece] += b.area;
          if (track.pieces[piece].kind == PieceKind::column && !crushed[piece] &&
              broken_area[piece] >= 0.5 * bonded_area[piece]) {
            crushed[piece] = true;
            cut_bonds_of(piece);
            release(piece, t + kReleaseTime);
          }
        }
      }
    }
    record(f);
    track.dust.push_back(advect(f));
    if (progress && progress(f, frames)) throw Error(ErrorCode::cancelled, "simulation cancelled at frame " + std::to_string(f));
  }
  return track;
}

}  // namespace drb::physics
