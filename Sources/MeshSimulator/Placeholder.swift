// Placeholder until the simulator lands.
import MeshCore
