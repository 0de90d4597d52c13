// A SwiftUI app that loads an edgekit Core ML artifact and runs its golden self-test on the device.
import SwiftUI

@main
struct EdgekitDemoApp: App {
    var body: some Scene {
        WindowGroup { ContentView() }
    }
}
