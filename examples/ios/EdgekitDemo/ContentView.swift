import SwiftUI

struct ContentView: View {
    @State private var lines: [String] = ["Tap 'Run self-test' to check the bundled artifact."]
    @State private var running = false

    var body: some View {
        NavigationStack {
            List(lines, id: \.self) { Text($0).font(.system(.footnote, design: .monospaced)) }
                .navigationTitle("edgekit self-test")
                .toolbar {
                    Button(running ? "Running…" : "Run self-test") { run() }.disabled(running)
                }
        }
    }

    private func run() {
        running = true
        Task.detached(priority: .userInitiated) {
            let report: [String]
            do {
                // The artifact folder (manifest.json, model.mlpackage, golden/) is added to the app
                // bundle as a folder reference named "artifact".
                guard let folder = Bundle.main.url(forResource: "artifact", withExtension: nil) else {
                    throw CheckError.missing("the app bundle has no 'artifact' folder")
                }
                report = try ArtifactChecker(folder: folder).runGoldenSelfTest()
            } catch {
                report = ["error: \(error)"]
            }
            await MainActor.run { lines = report; running = false }
        }
    }
}
