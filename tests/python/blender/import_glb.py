"""Run inside Blender (blender -b --python import_glb.py -- FILE.glb): imports the file with
Blender's own glTF importer and prints what it found as one JSON line."""
import json
import sys

import numpy

numpy.bool = bool  # Debian's Blender 3.4 importer still uses np.bool, removed in numpy 1.24

import bpy  # noqa: E402

path = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=path)
scene = bpy.context.scene
meshes = [o for o in scene.objects if o.type == "MESH"]
animated = [o for o in meshes if o.animation_data and o.animation_data.action]
last = max((int(o.animation_data.action.frame_range[1]) for o in animated), default=0)
moved = []
for o in animated:
    scene.frame_set(0)
    start = o.matrix_world.translation.copy()
    scene.frame_set(last)
    moved.append((o.matrix_world.translation - start).length)
print("DERRUMBE_BLENDER " + json.dumps({
    "meshes": len(meshes), "cameras": sum(o.type == "CAMERA" for o in scene.objects),
    "animated": len(animated), "last_frame": last, "max_moved": max(moved, default=0.0)}))
