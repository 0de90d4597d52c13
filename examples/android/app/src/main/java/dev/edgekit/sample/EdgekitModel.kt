package dev.edgekit.sample

import android.graphics.Bitmap
import org.json.JSONObject
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File

/**
 * Runs an edgekit android artifact: model.pte plus manifest.json, whose io contract says how to
 * turn a picture into the model input ((pixel * scale - mean) / std, NCHW or NHWC) and which
 * label each output index means. Nothing about the model is hard-coded here.
 */
class EdgekitModel(artifactDir: File) {
    private val manifest = JSONObject(File(artifactDir, "manifest.json").readText())
    private val io = manifest.getJSONObject("io")
    private val input = io.getJSONArray("inputs").getJSONObject(0)
    private val shape = LongArray(input.getJSONArray("shape").length()) { input.getJSONArray("shape").getLong(it) }
    private val prep = io.optJSONObject("preprocessing") ?: JSONObject()
    val labels: List<String> = io.optJSONArray("labels")?.let { a -> List(a.length()) { a.getString(it) } } ?: emptyList()
    private val module: Module = Module.load(File(artifactDir, "model.pte").absolutePath)

    /** Classify one image; returns (label, score) pairs, best first. */
    fun classify(bitmap: Bitmap, top: Int = 3): List<Pair<String, Float>> {
        val logits = run(preprocess(bitmap))
        return logits.indices.sortedByDescending { logits[it] }.take(top).map { (labels.getOrNull(it) ?: "#$it") to logits[it] }
    }

    /** Run token ids (int64 inputs, e.g. the sentence encoder); returns the first output. */
    fun runTokens(ids: LongArray): FloatArray =
        module.forward(EValue.from(Tensor.fromBlob(ids, shape)))[0].toTensor().dataAsFloatArray

    private fun run(x: FloatArray): FloatArray =
        module.forward(EValue.from(Tensor.fromBlob(x, shape)))[0].toTensor().dataAsFloatArray

    private fun preprocess(source: Bitmap): FloatArray {
        val nchw = prep.optString("layout", "NCHW") == "NCHW"
        val channels = if (prep.optString("color", "rgb") == "grayscale") 1 else 3
        val (h, w) = if (nchw) shape[2].toInt() to shape[3].toInt() else shape[1].toInt() to shape[2].toInt()
        val bitmap = Bitmap.createScaledBitmap(source, w, h, true)
        val scale = prep.optDouble("scale", 1.0 / 255.0).toFloat()
        val mean = floats(prep, "mean", channels, 0f)
        val std = floats(prep, "std", channels, 1f)
        val out = FloatArray(channels * h * w)
        for (y in 0 until h) for (x in 0 until w) {
            val p = bitmap.getPixel(x, y)
            val rgb = intArrayOf((p shr 16) and 0xff, (p shr 8) and 0xff, p and 0xff)
            for (c in 0 until channels) {
                val raw = if (channels == 1) (rgb[0] * 299 + rgb[1] * 587 + rgb[2] * 114) / 1000 else rgb[c]
                val v = (raw * scale - mean[c]) / std[c]
                out[if (nchw) c * h * w + y * w + x else (y * w + x) * channels + c] = v
            }
        }
        return out
    }

    private fun floats(o: JSONObject, key: String, n: Int, default: Float): FloatArray {
        val a = o.optJSONArray(key) ?: return FloatArray(n) { default }
        return if (a.length() == 0) FloatArray(n) { default } else FloatArray(n) { a.getDouble(it % a.length()).toFloat() }
    }
}
