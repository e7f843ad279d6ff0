import MeshNode
