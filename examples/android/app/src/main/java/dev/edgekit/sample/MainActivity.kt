package dev.edgekit.sample

import android.app.Activity
import android.graphics.BitmapFactory
import android.os.Bundle
import android.widget.TextView
import java.io.File

/** Copies the bundled artifact out of assets, classifies assets/sample.png, shows the top labels. */
class MainActivity : Activity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val dir = File(filesDir, "model").apply { mkdirs() }
        for (name in listOf("model.pte", "manifest.json")) {
            assets.open("model/$name").use { src -> File(dir, name).outputStream().use { src.copyTo(it) } }
        }
        val model = EdgekitModel(dir)
        val image = assets.open("sample.png").use { BitmapFactory.decodeStream(it) }
        val text = model.classify(image).joinToString("\n") { (label, score) -> "%s  %.3f".format(label, score) }
        setContentView(TextView(this).apply { this.text = text })
    }
}
