// Sample app consuming an edgekit android artifact. Not built in edgekit's CI (no Android SDK there).
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// Use the ExecuTorch Android release matching manifest.json "runtime_contract.version" (or newer):
// a .pte exported by a newer executorch than the runtime may fail to load.
val executorchVersion: String = (findProperty("executorchVersion") as String?) ?: "1.0.1"

android {
    namespace = "dev.edgekit.sample"
    compileSdk = 35
    defaultConfig {
        applicationId = "dev.edgekit.sample"
        minSdk = 24 // >= manifest "runtime_contract.min_sdk"
        targetSdk = 35
        ndk { abiFilters += listOf("arm64-v8a") } // manifest "runtime_contract.abi"
    }
    // Copy the artifact folder (model.pte, manifest.json, golden/) into src/main/assets/model/.
    androidResources { noCompress += listOf("pte") }
}

dependencies {
    implementation("org.pytorch:executorch-android:$executorchVersion")
    implementation("com.facebook.soloader:soloader:0.10.5")
    implementation("com.facebook.fbjni:fbjni:0.7.0")
}
