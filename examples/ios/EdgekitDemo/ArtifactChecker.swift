import CoreML
import Foundation

enum CheckError: Error, CustomStringConvertible {
    case missing(String)
    case badFile(String)
    var description: String {
        switch self {
        case .missing(let m), .badFile(let m): return m
        }
    }
}

/// What the app needs from manifest.json: the io contract (preprocessing, labels) and the golden set.
struct Manifest: Decodable {
    struct Golden: Decodable { let count: Int; let atol: Double; let rtol: Double }
    struct Preprocessing: Decodable {
        let layout: String; let color: String; let resize: [Int]; let scale: Double; let mean: [Double]; let std: [Double]
    }
    struct IO: Decodable { let preprocessing: Preprocessing?; let labels: [String]? }
    let golden: Golden
    let io: IO?
}

/// Loads the compiled model and the manifest, then runs golden/input_<i>.npy against golden/output_<i>.npy.
struct ArtifactChecker {
    let folder: URL

    func runGoldenSelfTest() throws -> [String] {
        let manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: folder.appendingPathComponent("manifest.json")))
        let config = MLModelConfiguration()
        config.computeUnits = .all
        // An .mlpackage must be compiled on the device before it loads (Xcode does this when the
        // package itself, rather than the artifact folder, is added to the target).
        let compiled = try MLModel.compileModel(at: folder.appendingPathComponent("model.mlpackage"))
        let model = try MLModel(contentsOf: compiled, configuration: config)
        let meta = model.modelDescription.metadata[.creatorDefinedKey] as? [String: String] ?? [:]

        var report: [String] = []
        if let p = manifest.io?.preprocessing {
            report.append("preprocessing: x * \(p.scale), mean \(p.mean), std \(p.std), \(p.layout), \(p.color)")
        }
        let labels = manifest.io?.labels ?? []
        report.append("labels: \(labels.count) (model metadata: \(meta["edgekit.labels"] == nil ? "absent" : "present"))")

        let inputName = model.modelDescription.inputDescriptionsByName.keys.first ?? "input"
        let outputName = model.modelDescription.outputDescriptionsByName.keys.first ?? "output"
        let intInput = meta["edgekit.input_dtype"] == "int32"
        var failures = 0
        for i in 0..<manifest.golden.count {
            let x = try Npy(url: folder.appendingPathComponent("golden/input_\(i).npy"))
            let expected = try Npy(url: folder.appendingPathComponent("golden/output_\(i).npy"))
            let input = try x.multiArray(as: intInput ? .int32 : .float32)
            let result = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: [inputName: input]))
            guard let out = result.featureValue(for: outputName)?.multiArrayValue else {
                throw CheckError.badFile("the model returned no '\(outputName)'")
            }
            var worst = 0.0
            var ok = out.count == expected.values.count
            for j in 0..<min(out.count, expected.values.count) {
                let got = out[j].doubleValue, want = expected.values[j]
                worst = max(worst, abs(got - want))
                if abs(got - want) > manifest.golden.atol + manifest.golden.rtol * abs(want) { ok = false }
            }
            if !ok { failures += 1 }
            var line = "golden \(i): \(ok ? "ok" : "MISMATCH") (max abs error \(String(format: "%.3g", worst)))"
            if !labels.isEmpty, let top = (0..<out.count).max(by: { out[$0].doubleValue < out[$1].doubleValue }), top < labels.count {
                line += ", top-1 '\(labels[top])'"
            }
            report.append(line)
        }
        report.append(failures == 0 ? "self-test passed" : "self-test FAILED (\(failures) of \(manifest.golden.count))")
        return report
    }
}

/// A minimal reader for the little-endian .npy files edgekit writes (float32, float64, int32, int64).
struct Npy {
    let shape: [Int]
    let values: [Double]

    init(url: URL) throws {
        let data = try Data(contentsOf: url)
        guard data.count > 10, data.prefix(6) == Data([0x93] + Array("NUMPY".utf8)) else { throw CheckError.badFile("\(url.lastPathComponent) is not .npy") }
        let major = data[6]
        let headerLength = major == 1 ? Int(data[8]) | Int(data[9]) << 8
                                      : Int(data[8]) | Int(data[9]) << 8 | Int(data[10]) << 16 | Int(data[11]) << 24
        let start = major == 1 ? 10 : 12
        let header = String(decoding: data[start..<start + headerLength], as: UTF8.self)
        let descr = header.components(separatedBy: "'descr': '").dropFirst().first?.prefix(3) ?? ""
        let dims = header.components(separatedBy: "(").dropFirst().first?.components(separatedBy: ")").first ?? ""
        shape = dims.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let body = data.subdata(in: start + headerLength..<data.count)
        switch descr {
        case "<f4": values = body.withUnsafeBytes { Array($0.bindMemory(to: Float32.self)).map(Double.init) }
        case "<f8": values = body.withUnsafeBytes { Array($0.bindMemory(to: Float64.self)) }
        case "<i4": values = body.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)).map(Double.init) }
        case "<i8": values = body.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)).map(Double.init) }
        default: throw CheckError.badFile("\(url.lastPathComponent): dtype \(descr) is not supported")
        }
    }

    func multiArray(as type: MLMultiArrayDataType) throws -> MLMultiArray {
        let array = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: type)
        for (i, v) in values.enumerated() { array[i] = NSNumber(value: v) }
        return array
    }
}
