"""Run inside Blender: blender -b --python cycles_clip.py -- JOB.json

Renders a clip's final frames with Cycles (written by training/render_clip.py, which describes the job):
the simulation's .glb through Blender's own glTF importer, each piece's material by its look
(concrete, brick, glass, steel) with procedural texture in the piece's own coordinates (the
texture moves with the piece), a street, a sun and a physical sky for the time of day, motion
blur, the simulation's dust as a point cloud, and the scene camera. Frames already on disk are
kept, so a killed render resumes.
With "mask_only" it renders only the pieces' coverage as alpha (no ground, no sky), for
checking that the Cycles camera is the one derrumbe's proxy renders from.
"""
import json
import math
import os
import sys

import numpy

numpy.bool = bool  # Debian's Blender 3.4 importer still uses np.bool, removed in numpy 1.24

import bpy  # noqa: E402

LOOKS = {  # base colours (linear), roughness, metallic, transmission
    "concrete": dict(color=(0.42, 0.41, 0.39), dark=(0.25, 0.25, 0.24), roughness=0.92, metallic=0.0, glass=0.0),
    "brick": dict(color=(0.38, 0.12, 0.07), dark=(0.22, 0.07, 0.04), roughness=0.85, metallic=0.0, glass=0.0),
    "glass": dict(color=(0.55, 0.65, 0.72), dark=(0.35, 0.42, 0.48), roughness=0.05, metallic=0.0, glass=0.9),
    "steel": dict(color=(0.55, 0.56, 0.58), dark=(0.33, 0.34, 0.35), roughness=0.35, metallic=1.0, glass=0.0),
}


def node(tree, kind, **inputs):
    n = tree.nodes.new(kind)
    for name, value in inputs.items():
        n.inputs[name].default_value = value
    return n


def look_material(name, look):
    """A Principled BSDF whose colour varies by a texture in object space (or bricks, for brick)."""
    spec = LOOKS[look]
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    tree = mat.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    coords = tree.nodes.new("ShaderNodeTexCoord")
    if look == "brick":
        tex = node(tree, "ShaderNodeTexBrick", Color1=(*spec["color"], 1), Color2=(*spec["dark"], 1),
                   Mortar=(0.55, 0.53, 0.5, 1), Scale=2.5)
    else:
        tex = node(tree, "ShaderNodeTexNoise", Scale=3.0, Detail=8.0)
        ramp = tree.nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].color = (*spec["dark"], 1)
        ramp.color_ramp.elements[1].color = (*spec["color"], 1)
        tree.links.new(tex.outputs["Fac"], ramp.inputs["Fac"])
    tree.links.new(coords.outputs["Object"], tex.inputs["Vector"])
    tree.links.new((tex if look == "brick" else ramp).outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = spec["roughness"]
    bsdf.inputs["Metallic"].default_value = spec["metallic"]
    bsdf.inputs["Transmission"].default_value = spec["glass"]
    return mat


def add_street():
    """Asphalt with a lighter pavement band, 400 m across, at the ground (y = 0 in the track)."""
    bpy.ops.mesh.primitive_plane_add(size=400.0, location=(0.0, 0.0, 0.0))
    ground = bpy.context.active_object
    mat = bpy.data.materials.new("street")
    mat.use_nodes = True
    tree = mat.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    coords = tree.nodes.new("ShaderNodeTexCoord")
    grain = node(tree, "ShaderNodeTexNoise", Scale=40.0, Detail=4.0)
    band = node(tree, "ShaderNodeTexWave", Scale=0.02, Distortion=0.0)  # slow bands: street and pavement
    mix = node(tree, "ShaderNodeMixRGB", Color1=(0.05, 0.05, 0.05, 1), Color2=(0.22, 0.21, 0.2, 1))
    tree.links.new(coords.outputs["Object"], grain.inputs["Vector"])
    tree.links.new(coords.outputs["Object"], band.inputs["Vector"])
    sharp = node(tree, "ShaderNodeMath", Value=0.0)
    sharp.operation = "GREATER_THAN"
    sharp.inputs[1].default_value = 0.75
    tree.links.new(band.outputs["Fac"], sharp.inputs[0])
    tree.links.new(sharp.outputs["Value"], mix.inputs["Fac"])
    dirt = node(tree, "ShaderNodeMixRGB", Fac=0.25, Color2=(0.0, 0.0, 0.0, 1))
    tree.links.new(mix.outputs["Color"], dirt.inputs["Color1"])
    tree.links.new(grain.outputs["Fac"], dirt.inputs["Fac"])
    tree.links.new(dirt.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = 0.95
    ground.data.materials.append(mat)


def add_sun_and_sky(look):
    """A physical (Nishita) sky and a sun lamp from the same direction; overcast dims the sun."""
    elevation, azimuth = math.radians(look["sun_elevation_deg"]), math.radians(look["sun_azimuth_deg"])
    overcast = look["time_of_day"] == "overcast"
    world = bpy.data.worlds.new("sky")
    bpy.context.scene.world = world
    world.use_nodes = True
    tree = world.node_tree
    sky = tree.nodes.new("ShaderNodeTexSky")
    sky.sky_type = "NISHITA"
    sky.sun_elevation, sky.sun_rotation = elevation, azimuth
    sky.air_density, sky.dust_density = 1.0, 4.0 if overcast else 1.0
    sky.sun_disc = False  # the sun lamp is the sun: one source, with soft shadows we control
    tree.nodes["Background"].inputs["Strength"].default_value = look["sky_strength"] * 0.3
    tree.links.new(sky.outputs["Color"], tree.nodes["Background"].inputs["Color"])
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    bpy.context.scene.collection.objects.link(sun)
    sun.data.energy = 0.6 if overcast else 2.5
    sun.data.angle = math.radians(15.0 if overcast else 0.6)
    sun.rotation_euler = (math.pi / 2 - elevation, 0.0, azimuth + math.pi / 2)


def add_dust():
    """An object whose vertices (set per frame by set_dust) Cycles renders as spheres: a point
    cloud made by geometry nodes, each point's radius and opacity from the simulation's dust."""
    obj = bpy.data.objects.new("dust", bpy.data.meshes.new("dust"))
    bpy.context.scene.collection.objects.link(obj)
    tree = bpy.data.node_groups.new("dust points", "GeometryNodeTree")
    tree.inputs.new("NodeSocketGeometry", "Geometry")
    tree.outputs.new("NodeSocketGeometry", "Geometry")
    points = tree.nodes.new("GeometryNodeMeshToPoints")
    radius = tree.nodes.new("GeometryNodeInputNamedAttribute")
    radius.data_type = "FLOAT"
    radius.inputs["Name"].default_value = "radius"
    material = tree.nodes.new("GeometryNodeSetMaterial")
    material.inputs["Material"].default_value = dust_material()
    tree.links.new(tree.nodes.new("NodeGroupInput").outputs["Geometry"], points.inputs["Mesh"])
    tree.links.new(radius.outputs["Attribute"], points.inputs["Radius"])
    tree.links.new(points.outputs["Points"], material.inputs["Geometry"])
    tree.links.new(material.outputs["Geometry"], tree.nodes.new("NodeGroupOutput").inputs["Geometry"])
    obj.modifiers.new("points", "NODES").node_group = tree
    return obj


def dust_material():
    """Pale grey-brown dust, transparent by each particle's opacity."""
    mat = bpy.data.materials.new("dust")
    mat.use_nodes = True
    tree = mat.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (0.42, 0.37, 0.30, 1.0)
    bsdf.inputs["Roughness"].default_value = 1.0
    opacity = tree.nodes.new("ShaderNodeAttribute")
    opacity.attribute_name = "opacity"
    # A particle stands for a puff, not a solid ball: a third of its opacity per surface crossed.
    soft = tree.nodes.new("ShaderNodeMath")
    soft.operation = "MULTIPLY"
    soft.inputs[1].default_value = 0.33
    tree.links.new(opacity.outputs["Fac"], soft.inputs[0])
    mix = tree.nodes.new("ShaderNodeMixShader")
    tree.links.new(soft.outputs["Value"], mix.inputs["Fac"])
    tree.links.new(tree.nodes.new("ShaderNodeBsdfTransparent").outputs["BSDF"], mix.inputs[1])
    tree.links.new(bsdf.outputs["BSDF"], mix.inputs[2])
    tree.links.new(mix.outputs["Shader"], tree.nodes["Material Output"].inputs["Surface"])
    return mat


def set_dust(obj, particles):
    """particles: [N, 5] x, y, z, radius, opacity in the track's Y-up frame (the importer's Z-up: x, -z, y)."""
    mesh = obj.data
    mesh.clear_geometry()
    mesh.vertices.add(len(particles))
    mesh.vertices.foreach_set("co", numpy.stack([particles[:, 0], -particles[:, 2], particles[:, 1]], 1).ravel())
    for name, column in [("radius", 3), ("opacity", 4)]:
        mesh.attributes.new(name, "FLOAT", "POINT").data.foreach_set("value", particles[:, column].copy())
    mesh.update()


def setup(job):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=job["glb"])
    scene = bpy.context.scene
    scene.render.fps = job["fps"]
    camera = next(o for o in scene.objects if o.type == "CAMERA" and o.name.startswith(job["camera"]))
    scene.camera = camera
    camera.data.sensor_fit = "HORIZONTAL"
    camera.data.sensor_width, camera.data.sensor_height = job["sensor_mm"]
    camera.data.lens = job["focal_length_mm"]
    materials = {name: look_material(name + "-cycles", look) for name, look in job["materials"].items()}
    for obj in scene.objects:
        if obj.type == "MESH":
            for slot in obj.material_slots:
                base = slot.material.name.split(".")[0] if slot.material else ""
                if base in materials:
                    slot.material = materials[base]
    render = scene.render
    render.engine = "CYCLES"
    render.resolution_x, render.resolution_y, render.resolution_percentage = job["width"], job["height"], 100
    render.image_settings.file_format = "PNG"
    scene.view_settings.view_transform, scene.view_settings.look = "Filmic", "Medium High Contrast"
    scene.cycles.device = "CPU"
    scene.cycles.samples = job["samples"]
    scene.cycles.use_denoising = False  # Debian's Blender has no OpenImageDenoise
    # Short light paths: an outdoor scene under a sun needs few bounces, and they cost the most.
    scene.cycles.max_bounces, scene.cycles.diffuse_bounces, scene.cycles.glossy_bounces = 4, 2, 2
    scene.cycles.transmission_bounces, scene.cycles.transparent_max_bounces = 4, 4
    scene.cycles.use_adaptive_sampling, scene.cycles.adaptive_threshold = True, 0.05
    render.use_persistent_data = True  # keeps the synced scene between frames: only transforms change
    if job.get("mask_only"):
        render.film_transparent = True
        render.image_settings.color_mode = "RGBA"
        scene.cycles.samples = 1
        render.filter_size = 0.01  # a hard edge, as the rasterizer's coverage at one sample
    else:
        render.use_motion_blur = job.get("motion_blur", True)
        render.motion_blur_shutter = 0.5
        render.image_settings.color_mode = "RGB"
        add_street()
        add_sun_and_sky(job["look"])
    return scene


def main():
    job = json.load(open(sys.argv[sys.argv.index("--") + 1]))
    scene = setup(job)
    dust = numpy.load(job["dust"]) if job.get("dust") and not job.get("mask_only") else None
    dust_object = add_dust() if dust is not None else None
    for frame in job["frames"]:
        path = job["pattern"] % frame
        if os.path.exists(path):
            continue
        scene.frame_set(frame)
        if dust_object is not None:
            particles = dust[f"frame{frame}"].astype(numpy.float32)
            set_dust(dust_object, particles)
            print(f"DERRUMBE_CYCLES frame {frame} dust {len(particles)}")
        scene.render.filepath = path + ".part.png"
        bpy.ops.render.render(write_still=True)
        os.replace(path + ".part.png", path)  # a frame on disk is a finished frame
    print("DERRUMBE_CYCLES done")


main()
